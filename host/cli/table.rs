//! Tables for the terminal: the plan `porthost run` and `porthost check` print, and the
//! service listing.

use porthost::config::PortPlan;
use porthost::sockets::Origin;

/// A plan as a table: for `porthost check`, and with where each socket came from for the
/// start of `porthost run`.
pub fn plan<'a>(ports: impl IntoIterator<Item = (&'a PortPlan, Option<&'a Origin>)>) -> String {
    let mut header = ["PORT", "ADDRESS", "SERVICE", "MODEL", "MAX CONN"]
        .map(str::to_owned)
        .to_vec();
    let mut rows = Vec::new();
    let mut sockets = false;
    for (plan, origin) in ports {
        let e = &plan.entry;
        let mut row = vec![
            e.port().to_string(),
            e.addr.ip().to_string(),
            e.service.clone(),
            e.model.to_string(),
            e.max_connections.to_string(),
        ];
        if let Some(origin) = origin {
            sockets = true;
            row.push(origin.describe());
        }
        rows.push(row);
    }
    if sockets {
        header.push("SOCKET".to_owned());
    }
    rows.insert(0, header);
    render(&rows)
}

/// `porthost services`: each service's name and summary, the models it runs under, and its
/// options with their defaults.
pub fn services(listing: &[crate::listing::Listing]) -> String {
    let width = listing.iter().map(|l| l.name.len()).max().unwrap_or(0) + 2;
    let indent = " ".repeat(width);
    let mut out = String::new();
    for l in listing {
        let models: Vec<&str> = l.models.iter().map(|m| m.name()).collect();
        out += &format!("{:width$}{}\n", l.name, l.summary);
        out += &format!("{indent}models: {}\n", models.join(", "));
        let options: Vec<Vec<String>> = l
            .options
            .iter()
            .map(|o| vec![format!("{} = {}", o.name, o.default), o.meaning.to_owned()])
            .collect();
        for (i, line) in render(&options).lines().enumerate() {
            let label = if i == 0 { "options: " } else { "         " };
            out += &format!("{indent}{label}{line}\n");
        }
        if options.is_empty() {
            out += &format!("{indent}options: none\n");
        }
    }
    out
}

/// Left-aligned columns separated by two spaces.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Wraps text at spaces into lines of at most `width` characters (a longer word stands alone),
/// the lines after the first indented by two, each ended with a newline.
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let fresh = line.is_empty() || line == "  ";
        if !fresh && line.chars().count() + 1 + word.chars().count() > width {
            out += &line;
            out += "\n";
            line = "  ".to_owned();
        } else if !fresh {
            line.push(' ');
        }
        line += word;
    }
    out += &line;
    out += "\n";
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn notes_wrap_at_spaces_and_indent_what_follows() {
        assert_eq!(
            super::wrap("one two three four", 9),
            "one two\n  three\n  four\n"
        );
        assert_eq!(super::wrap("short", 80), "short\n");
    }
}
