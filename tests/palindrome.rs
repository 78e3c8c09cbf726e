//! Every palindrome version under every model, against the real binary.

use std::io::Write;
use std::time::Duration;

use crate::support::{Client, TestHost, combos, entry, eventually};

/// The line limit of the test ports: small, so over-long lines are cheap to send.
const LIMIT: usize = 100;

/// One host serving each palindrome version under each model; returns it with the
/// `(service, model)` of each port index.
fn all_ports() -> (TestHost, Vec<(&'static str, &'static str)>) {
    let combos = combos();
    let extra = format!("max_line_bytes = {LIMIT}");
    let entries: Vec<_> = combos.iter().map(|(s, m)| entry(s, m, &extra)).collect();
    (TestHost::start("", &entries), combos)
}

const PALINDROMIC: [&str; 6] = [
    "А роза упала на лапу Азора",
    "Was it a car or a cat I saw?",
    "abba",
    "12321",
    "Я",
    "Їжак, каж Ї",
];
const NOT_PALINDROMIC: [&str; 3] = ["abc", "ab1", "паліндром"];

#[test]
fn answers_the_lecture_table_everywhere() {
    let (host, combos) = all_ports();
    for (i, combo) in combos.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        for line in PALINDROMIC {
            assert_eq!(client.ask(line), "1", "{combo:?}: {line:?}");
        }
        for line in NOT_PALINDROMIC {
            assert_eq!(client.ask(line), "", "{combo:?}: {line:?}");
        }
        client.send(b"\n");
        assert!(
            client.is_closed(),
            "{combo:?}: an empty line ends the session"
        );
    }
}

#[test]
fn a_line_sent_one_byte_per_write() {
    let (host, combos) = all_ports();
    for (i, combo) in combos.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        for byte in "А роза упала на лапу Азора\nabc\n".as_bytes() {
            client.send(&[*byte]);
            std::thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(client.line().as_deref(), Some("1"), "{combo:?}");
        assert_eq!(client.line().as_deref(), Some(""), "{combo:?}");
    }
}

#[test]
fn many_lines_in_one_write_and_crlf() {
    let (host, combos) = all_ports();
    let mut batch = String::new();
    for i in 0..200 {
        batch.push_str(if i % 2 == 0 { "abba\r\n" } else { "abc\n" });
    }
    for (i, combo) in combos.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        client.send(batch.as_bytes());
        for j in 0..200 {
            let want = if j % 2 == 0 { "1" } else { "" };
            assert_eq!(client.line().as_deref(), Some(want), "{combo:?} line {j}");
        }
        // A last line without a terminator is answered when the client half-closes.
        client.send(b"xyzzyx");
        client.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(client.line().as_deref(), Some("1"), "{combo:?}");
        assert!(client.is_closed(), "{combo:?}");
    }
}

#[test]
fn invalid_utf8_is_answered_and_the_session_goes_on() {
    let (host, combos) = all_ports();
    for (i, combo) in combos.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        client.send(b"ab\xff\xfeba\n");
        assert_eq!(client.line().as_deref(), Some("1"), "{combo:?}");
        client.send(b"\xc3\x28abc\n");
        assert_eq!(client.line().as_deref(), Some(""), "{combo:?}");
        assert_eq!(client.ask("abba"), "1", "{combo:?}");
    }
}

#[test]
fn an_empty_line_closes_even_if_the_client_stays() {
    let (host, combos) = all_ports();
    for (i, combo) in combos.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        assert_eq!(client.ask("abba"), "1");
        client.send(b"\nabba\n");
        assert!(client.is_closed(), "{combo:?}");
    }
}

#[test]
fn an_over_long_line_gets_err_and_a_close_while_others_are_served() {
    let (host, combos) = all_ports();
    for (i, combo) in combos.iter().enumerate() {
        let sequential = combo.1 == "sequential";
        let mut offender = Client::connect(host.addr(i));
        assert_eq!(offender.ask("abba"), "1", "{combo:?}");
        let mut bystander = Client::connect(host.addr(i));
        if !sequential {
            assert_eq!(bystander.ask("abba"), "1", "{combo:?}");
        }
        // Keep sending a line far past the limit from another thread while reading: the ERR
        // line must arrive even though the server closes with our input unread.
        let mut writer = offender.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..64 {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        assert_eq!(
            offender.line().as_deref(),
            Some(format!("ERR line longer than {LIMIT} bytes").as_str()),
            "{combo:?}"
        );
        sender.join().unwrap();
        offender.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(offender.is_closed(), "{combo:?}");
        assert_eq!(
            bystander.ask("abc"),
            "",
            "{combo:?}: the other client is still served"
        );
        assert_eq!(bystander.ask("abba"), "1", "{combo:?}");
    }
}

#[test]
fn a_line_exactly_at_the_limit_is_served() {
    let (host, combos) = all_ports();
    let line = "a".repeat(LIMIT);
    for (i, combo) in combos.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        client.send(format!("{line}\r\n").as_bytes());
        assert_eq!(client.line().as_deref(), Some("1"), "{combo:?}");
    }
}

#[test]
fn sequential_serves_the_next_client_only_after_the_first_leaves() {
    let (host, combos) = all_ports();
    for (i, combo) in combos.iter().enumerate() {
        let mut first = Client::connect(host.addr(i));
        assert_eq!(first.ask("abba"), "1");
        let mut second = Client::connect(host.addr(i));
        second.send(b"abba\n");
        if combo.1 == "sequential" {
            // The second client sits in the kernel's accept queue until the first leaves: the
            // host has not even accepted it, so it cannot have been served.
            assert!(
                eventually(|| host.waiting(i) == Some(1)),
                "{combo:?}: the second client is not left waiting in the accept queue"
            );
            assert_eq!(
                second.line_within(Duration::from_millis(1)),
                None,
                "{combo:?}"
            );
            first.send(b"\n");
            assert!(first.is_closed());
            assert_eq!(second.line().as_deref(), Some("1"), "{combo:?}");
        } else {
            // Both are served while both are connected.
            assert_eq!(second.line().as_deref(), Some("1"), "{combo:?}");
            assert_eq!(first.ask("abc"), "", "{combo:?}");
        }
    }
}
