//! What `/proc` says about a server: its process tree, memory and threads. The bench measures
//! footprints with it; the integration tests use it to see threads and children come and go.

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub parent: u32,
    /// `R`, `S`, `Z` (zombie: ended, not yet reaped), ...
    pub state: char,
}

/// Every process on the machine.
pub fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold anything: parse after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let parent = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        all.push(Process { pid, parent, state });
    }
    all
}

/// Every process below `pid` (children, grandchildren, ...), zombies included.
pub fn descendants(pid: u32) -> Vec<Process> {
    let all = processes();
    let mut found: Vec<Process> = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for process in all.iter().filter(|p| p.parent == parent) {
            found.push(*process);
            parents.push(process.pid);
        }
    }
    found
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    status_field(pid, field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The thread count of a process.
pub fn threads(pid: u32) -> usize {
    status_field(pid, "Threads")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_owned())
    })
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Resident memory, threads and processes of a server and everything below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    pub rss_kib: u64,
    pub threads: usize,
    pub processes: usize,
}

pub fn footprint(pid: u32) -> Footprint {
    let mut pids = vec![pid];
    pids.extend(
        descendants(pid)
            .into_iter()
            .filter(|p| p.state != 'Z')
            .map(|p| p.pid),
    );
    Footprint {
        rss_kib: pids.iter().filter_map(|p| status_kib(*p, "VmRSS")).sum(),
        threads: pids.iter().map(|p| threads(*p)).sum(),
        processes: pids.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(threads(me) >= 1);
        assert!(open_fds(me) >= 3);
        assert!(processes().iter().any(|p| p.pid == me));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(descendants(me).iter().any(|p| p.pid == child.id()));
        assert!(footprint(me).processes >= 2);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
