//! The lecture's palindrome servers, three ways. All speak one protocol: for each line the
//! server answers `1\n` when it is a palindrome and `\n` when not (the lecture's one-byte string
//! for True, empty string for False, plus newline); an empty line or EOF ends the session.
//!
//! - [`v1`]: byte level, its own framing over raw reads (the lecture's `recv` / `sendall`).
//! - [`v2`]: file-like objects: a buffered reader and writer (the lecture's `makefile`).
//! - [`v3`]: a handler for the host's line framing (the lecture's `StreamRequestHandler`).
//!
//! Every version also takes [`Work`]: CPU time (`busy_us`) and a wait (`sleep_ms`) per line, so
//! that the models' differences show: a spin holds whatever thread runs it, while the wait is
//! done each form's way, a blocking sleep on a thread or a process of its own and a timer in
//! the async form, which leaves the thread to the other clients.

pub mod v1;
pub mod v2;
pub mod v3;

use std::time::{Duration, Instant};

use crate::OptionDoc;

/// `strict`, the option every version has.
pub const STRICT: OptionDoc = OptionDoc {
    name: "strict",
    default: "false",
    meaning: "compare every character exactly, instead of letters and digits ignoring case",
};

/// `busy_us`: up to a second of CPU per line.
pub const BUSY_US: OptionDoc = OptionDoc {
    name: "busy_us",
    default: "0",
    meaning: "spin the CPU this many microseconds (0 to 1000000) per line: work that holds the \
              thread serving it",
};

/// `sleep_ms`: up to ten seconds per line, so that a drain still ends soon after its grace.
pub const SLEEP_MS: OptionDoc = OptionDoc {
    name: "sleep_ms",
    default: "0",
    meaning: "wait this many milliseconds (0 to 10000) per line before answering: a blocking \
              sleep on a thread or process of its own, a timer under async and event-loop",
};

const MAX_BUSY_US: u64 = 1_000_000;
const MAX_SLEEP_MS: u64 = 10_000;

/// What answering a line costs besides the test itself: `busy_us` and `sleep_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub busy: Duration,
    pub sleep: Duration,
}

impl Work {
    fn read(reader: &mut crate::OptionReader<'_>) -> Work {
        Work {
            busy: Duration::from_micros(reader.number(
                BUSY_US.name,
                0,
                MAX_BUSY_US,
                "microseconds",
            )),
            sleep: Duration::from_millis(reader.number(
                SLEEP_MS.name,
                0,
                MAX_SLEEP_MS,
                "milliseconds",
            )),
        }
    }

    /// Spins until this thread has spent `busy` of CPU per line, `lines` of them: CPU work,
    /// whatever the form. Counted on the thread's own CPU clock, not the wall clock: where more
    /// threads spin than there are cores, each gets a share of one, and a spin that watched the
    /// wall clock would end having done a fraction of its work (50 threads on 2 cores: a
    /// twentieth), making the threads look as if they had a core each.
    fn spin(&self, lines: u32) {
        if self.busy.is_zero() {
            return;
        }
        let work = self.busy * lines;
        match thread_cpu() {
            Some(start) => {
                while thread_cpu().is_some_and(|now| now.saturating_sub(start) < work) {
                    std::hint::spin_loop();
                }
            }
            // No CPU clock for the thread (not Linux): the wall clock is the next best.
            None => {
                let until = Instant::now() + work;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// The work of `lines` lines on a thread of the connection's own: a blocking sleep.
    pub fn blocking(&self, lines: u32) {
        self.spin(lines);
        if !self.sleep.is_zero() && lines > 0 {
            std::thread::sleep(self.sleep * lines);
        }
    }

    /// The work of `lines` lines in the async form: the wait is a timer.
    pub async fn wait(&self, lines: u32) {
        self.spin(lines);
        if !self.sleep.is_zero() && lines > 0 {
            tokio::time::sleep(self.sleep * lines).await;
        }
    }
}

/// The CPU time this thread has spent.
fn thread_cpu() -> Option<Duration> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::from(now))
}

/// Reads `strict`, the [`Work`] per line (and whatever `more` reads too), reporting every
/// mistake at once.
fn strict_and<T>(
    options: &crate::Options,
    more: impl FnOnce(&mut crate::OptionReader<'_>) -> T,
) -> Result<(bool, Work, T), String> {
    let mut reader = options.reader();
    let strict = reader.bool(STRICT.name, false);
    let work = Work::read(&mut reader);
    let more = more(&mut reader);
    reader.finish()?;
    Ok((strict, work, more))
}

/// The palindrome test. By default it is Unicode-aware and compares letters and digits only,
/// ignoring case, so "А роза упала на лапу Азора" passes; `strict` compares every character.
///
/// One walk from both ends until they meet: each character is classified and lower-cased once,
/// by whichever end reaches it, and nothing is allocated. A character may lower-case to several
/// (`İ` to `i̇`): its pieces wait at the end that reached it, and once the ends have met, the
/// other end takes the rest of them from there.
pub fn is_palindrome(text: &str, strict: bool) -> bool {
    if strict {
        return text.chars().eq(text.chars().rev());
    }
    let mut walk = Walk {
        middle: text.chars(),
        front: None,
        back: None,
    };
    loop {
        let Some(first) = walk.next_front() else {
            return true;
        };
        // Nothing left for the back end: `first` was the middle.
        let Some(last) = walk.next_back() else {
            return true;
        };
        if first != last {
            return false;
        }
    }
}

/// The lower-cased letters and digits of a text, taken from either end: the characters no end
/// has reached yet, and the pieces of the last one each end lower-cased.
struct Walk<'a> {
    middle: std::str::Chars<'a>,
    front: Option<std::char::ToLowercase>,
    back: Option<std::char::ToLowercase>,
}

impl Walk<'_> {
    fn next_front(&mut self) -> Option<char> {
        loop {
            if let Some(c) = self.front.as_mut().and_then(Iterator::next) {
                return Some(c);
            }
            match self.middle.next() {
                Some(c) if c.is_alphanumeric() => self.front = Some(c.to_lowercase()),
                Some(_) => {}
                None => return self.back.as_mut()?.next(),
            }
        }
    }

    fn next_back(&mut self) -> Option<char> {
        loop {
            if let Some(c) = self.back.as_mut().and_then(DoubleEndedIterator::next_back) {
                return Some(c);
            }
            match self.middle.next_back() {
                Some(c) if c.is_alphanumeric() => self.back = Some(c.to_lowercase()),
                Some(_) => {}
                None => return self.front.as_mut()?.next_back(),
            }
        }
    }
}

/// The palindrome test written the obvious way: collect the lower-cased letters and digits, then
/// compare them with their reverse. What [`is_palindrome`] must agree with (a property test) and
/// is measured against (`cargo bench -p porthost-services`); it allocates.
pub fn is_palindrome_naive(text: &str) -> bool {
    let letters: Vec<char> = text
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    letters.iter().eq(letters.iter().rev())
}

/// The reply for one line.
pub fn verdict(text: &str, strict: bool) -> &'static [u8] {
    if is_palindrome(text, strict) {
        b"1\n"
    } else {
        b"\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lecture_table() {
        for yes in [
            "А роза упала на лапу Азора",
            "Was it a car or a cat I saw?",
            "abba",
            "12321",
            "Я",
            "",
        ] {
            assert!(is_palindrome(yes, false), "{yes:?} should be a palindrome");
        }
        for no in ["abc", "ab1", "паліндром"] {
            assert!(
                !is_palindrome(no, false),
                "{no:?} should not be a palindrome"
            );
        }
    }

    #[test]
    fn case_folding_is_unicode_aware() {
        assert!(is_palindrome("Їжаїї", false) == is_palindrome("їжаїї", false));
        assert!(is_palindrome("ЇаЇ", false));
        assert!(is_palindrome("Ǆxǆ", false));
    }

    #[test]
    fn strict_compares_every_character() {
        assert!(is_palindrome("abba", true));
        assert!(!is_palindrome("Abba", true));
        assert!(!is_palindrome("Was it a car or a cat I saw?", true));
        assert!(is_palindrome("a b a", true));
    }

    #[test]
    fn characters_that_lower_case_to_several_meet_in_the_middle() {
        // `İ` lower-cases to `i` and a combining dot: two pieces from one character.
        for text in [
            "İ",
            "aİa",
            "İİ",
            "i\u{307}İ",
            "İ\u{307}i",
            "xİ\u{307}ix",
            "İx",
        ] {
            assert_eq!(
                is_palindrome(text, false),
                is_palindrome_naive(text),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_walk_agrees_with_collect_then_compare(text in "\\PC*") {
            proptest::prop_assert_eq!(is_palindrome(&text, false), is_palindrome_naive(&text));
        }

        #[test]
        fn the_walk_agrees_on_texts_made_to_be_palindromes(
            half in "\\PC*",
            middle in proptest::option::of(proptest::char::any()),
            noise in "[ ,.!?]*",
        ) {
            let back: String = half.chars().rev().collect();
            let text = format!("{half}{noise}{}{back}", middle.map(String::from).unwrap_or_default());
            proptest::prop_assert_eq!(is_palindrome(&text, false), is_palindrome_naive(&text));
        }
    }

    #[test]
    fn a_spin_is_cpu_time_spent_however_many_threads_share_the_cores() {
        let work = Work {
            busy: Duration::from_millis(15),
            sleep: Duration::ZERO,
        };
        // More spinning threads than this machine has cores: each must still spend its own
        // 2 × 15 ms of CPU, not 30 ms of the wall clock.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let spun: Vec<Duration> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..cores * 3)
                .map(|_| {
                    scope.spawn(|| {
                        let start = thread_cpu().unwrap();
                        work.blocking(2);
                        thread_cpu().unwrap() - start
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for cpu in spun {
            assert!(cpu >= Duration::from_millis(30), "{cpu:?}");
        }
    }

    #[test]
    fn work_options_are_bounded_and_every_mistake_reported() {
        let options = |text: &str| crate::Options::new(toml::from_str(text).unwrap(), ".");
        let (_, work, ()) = strict_and(&options("busy_us = 250\nsleep_ms = 3"), |_| ()).unwrap();
        assert_eq!(
            work,
            Work {
                busy: Duration::from_micros(250),
                sleep: Duration::from_millis(3)
            }
        );
        let (_, work, ()) = strict_and(&options(""), |_| ()).unwrap();
        assert_eq!(work, Work::default());
        let err = strict_and(&options("busy_us = 1000001\nsleep_ms = -1"), |_| ()).unwrap_err();
        assert_eq!(
            err,
            "busy_us must be a whole number of microseconds from 0 to 1000000, not 1000001; \
             sleep_ms must be a whole number of milliseconds from 0 to 10000, not -1"
        );
        let err = strict_and(&options("sleep_ms = \"5\""), |_| ()).unwrap_err();
        assert!(err.contains("not the string \"5\""), "{err}");
    }

    #[test]
    fn the_spin_takes_its_time_per_line() {
        let work = Work {
            busy: Duration::from_millis(2),
            sleep: Duration::ZERO,
        };
        let start = Instant::now();
        work.blocking(3);
        assert!(start.elapsed() >= Duration::from_millis(6));
    }

    #[test]
    fn verdict_is_the_lecture_reply() {
        assert_eq!(verdict("abba", false), b"1\n");
        assert_eq!(verdict("abc", false), b"\n");
    }
}
