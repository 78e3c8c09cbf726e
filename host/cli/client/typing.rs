//! Typing at a terminal key by key, for the game client.
//!
//! A terminal left to its own line editing keeps a line the user has not finished in the
//! kernel, out of the client's reach, and echoes it wherever the cursor is: `xy` typed during
//! the other player's turn lands among the game's messages and is glued to the next move
//! (`xyz`). So the client switches the terminal's line editing and echo off ([`RawTerminal`])
//! and edits the line itself ([`LineEditor`]): what is typed is known at every moment, is drawn
//! again below each message, and can be dropped when a question comes that it was not typed
//! for.

use std::os::fd::AsFd;

use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

/// What a key did to the line being typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// The line changed (a character typed or erased): draw it again.
    Changed,
    /// Enter: the line, which the editor no longer holds.
    Line(String),
    /// Ctrl-D on an empty line: the end of input, as at a shell.
    End,
}

/// Where the editor is in a multi-key sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Started,
    /// Inside `ESC [ ...` (arrows, Home, Delete, ...), until its final byte.
    Csi,
    /// After `ESC O` (arrows and F1–F4 on some terminals): one more byte.
    Ss3,
}

/// The line being typed, edited key by key: printable characters (any script) are added, and
/// Backspace, Ctrl-U (erase the line) and Ctrl-W (erase a word) work as in a terminal's own
/// line editing. Cursor keys and other escape sequences are ignored (the cursor stays at the
/// end), as are other control keys.
#[derive(Debug, Default)]
pub struct LineEditor {
    text: String,
    /// The bytes of a character not complete yet (UTF-8 arrives byte by byte).
    partial: Vec<u8>,
    escape: Escape,
    /// The longest line kept, in bytes; more characters are ignored.
    max: usize,
}

impl LineEditor {
    /// An editor keeping lines up to `max` bytes.
    pub fn new(max: usize) -> LineEditor {
        LineEditor {
            max,
            ..LineEditor::default()
        }
    }

    /// The line typed so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Takes the line typed so far, leaving the editor empty.
    pub fn take(&mut self) -> String {
        self.partial.clear();
        std::mem::take(&mut self.text)
    }

    /// One byte from the terminal; what it did, if anything.
    pub fn key(&mut self, byte: u8) -> Option<Edit> {
        match self.escape {
            Escape::None => {}
            Escape::Started => {
                self.escape = match byte {
                    b'[' => Escape::Csi,
                    b'O' => Escape::Ss3,
                    _ => Escape::None,
                };
                return None;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return None;
            }
            Escape::Ss3 => {
                self.escape = Escape::None;
                return None;
            }
        }
        match byte {
            b'\r' | b'\n' => Some(Edit::Line(self.take())),
            0x7f | 0x08 => {
                self.partial.clear();
                self.text.pop().map(|_| Edit::Changed)
            }
            0x15 => {
                self.take();
                Some(Edit::Changed)
            }
            0x17 => {
                let kept = self
                    .text
                    .trim_end()
                    .trim_end_matches(|c: char| !c.is_whitespace());
                self.text.truncate(kept.len());
                Some(Edit::Changed)
            }
            0x04 if self.text.is_empty() => Some(Edit::End),
            0x1b => {
                self.escape = Escape::Started;
                None
            }
            0..0x20 => None,
            _ => self.add(byte),
        }
    }

    /// A byte of a printable character: the character is added once it is complete.
    fn add(&mut self, byte: u8) -> Option<Edit> {
        self.partial.push(byte);
        let c = match std::str::from_utf8(&self.partial) {
            Ok(complete) => complete.chars().next()?,
            // Incomplete so far: wait for the rest.
            Err(e) if e.error_len().is_none() => return None,
            Err(_) => char::REPLACEMENT_CHARACTER,
        };
        self.partial.clear();
        if self.text.len() + c.len_utf8() > self.max {
            return None;
        }
        self.text.push(c);
        Some(Edit::Changed)
    }
}

/// The terminal with its line editing and echo off, for as long as this lives; dropping it
/// puts the settings back. Signals stay on: Ctrl-C still interrupts, and the client catches it
/// so that this is dropped.
#[derive(Debug)]
pub struct RawTerminal<F: AsFd> {
    fd: F,
    saved: Termios,
}

impl<F: AsFd> RawTerminal<F> {
    /// Switches the terminal at `fd` to reading key by key without echo.
    pub fn enter(fd: F) -> nix::Result<RawTerminal<F>> {
        let saved = termios::tcgetattr(&fd)?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(&fd, SetArg::TCSANOW, &raw)?;
        Ok(RawTerminal { fd, saved })
    }
}

impl<F: AsFd> Drop for RawTerminal<F> {
    fn drop(&mut self) {
        // Nothing to do if it fails: the terminal is gone.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `keys`; the edits, and the line left in the editor.
    fn typed(keys: &[u8]) -> (Vec<Edit>, String) {
        let mut editor = LineEditor::new(8);
        let edits = keys.iter().filter_map(|&b| editor.key(b)).collect();
        (edits, editor.text().to_owned())
    }

    fn line(text: &str) -> Edit {
        Edit::Line(text.to_owned())
    }

    #[test]
    fn characters_are_added_and_enter_gives_the_line() {
        let (edits, left) = typed(b"ab\rc\n");
        assert_eq!(
            edits,
            [
                Edit::Changed,
                Edit::Changed,
                line("ab"),
                Edit::Changed,
                line("c")
            ]
        );
        assert_eq!(left, "");
    }

    #[test]
    fn a_character_of_several_bytes_is_added_once_complete() {
        let (edits, left) = typed("жω".as_bytes());
        assert_eq!((edits.len(), left.as_str()), (2, "жω"));
        assert_eq!(
            typed(b"\xffa").1,
            "\u{fffd}a",
            "a stray byte is not lost silently"
        );
    }

    #[test]
    fn backspace_ctrl_u_and_ctrl_w_erase() {
        assert_eq!(typed("abж\x7f\x7f".as_bytes()).1, "a");
        assert_eq!(typed(b"ab\x08").1, "a", "Ctrl-H");
        assert_eq!(typed(b"\x7f").0, [], "nothing to erase");
        assert_eq!(typed(b"abc\x15d").1, "d");
        assert_eq!(typed(b"ab cd \x17").1, "ab ");
    }

    #[test]
    fn escape_sequences_and_control_keys_are_ignored() {
        // Left arrow, Delete, F1 (SS3), Alt-x, Tab.
        assert_eq!(typed(b"a\x1b[D\x1b[3~\x1bOPb\x1bx\tc").1, "abc");
    }

    #[test]
    fn ctrl_d_ends_input_only_on_an_empty_line() {
        assert_eq!(typed(b"\x04").0, [Edit::End]);
        assert_eq!(typed(b"a\x04").0, [Edit::Changed]);
    }

    #[test]
    fn a_line_is_kept_to_its_limit() {
        let (edits, left) = typed(b"abcdefghij\r");
        assert_eq!(left, "");
        assert_eq!(edits.last(), Some(&line("abcdefgh")));
    }
}
