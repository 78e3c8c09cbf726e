//! CPU time a server spends, per unit of work: the classic figure for comparing server designs
//! (Stevens, UNP vol. 1, ch. 30: CPU time per client), and the one that holds still on a busy
//! machine where throughput swings.
//!
//! A server is a process tree: the host, its threads, the process-per-client forker (a child
//! of the host) and the per-connection children (the forker's children); a baseline and its
//! children; `tcpserver` and the programs it execs. `/proc/<pid>/stat` gives each process its
//! own user and system time (all its threads, live and ended) and, in `cutime`/`cstime`, that
//! of every child it has reaped, which itself holds what that child had reaped. Summed over the
//! processes alive in the tree, each CPU second counts once: a live process by its own fields,
//! an ended one in its reaper's. A child ending between two reads can be counted by neither or
//! by both, so [`settled`] waits until every child the load made has been reaped before the
//! final reading.
//!
//! The same fields give minor page faults (`minflt`, and `cminflt` of reaped children) summed
//! the same way: what a fork server's children cost in page-table work is mostly faults, one
//! per page a child touches again after `fork()`.

use std::time::{Duration, Instant};

use nix::unistd::{SysconfVar, sysconf};
use porthost::procfs;

/// CPU time of a process tree, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub nanos: u64,
    /// Minor page faults, the reaped children's included.
    pub faults: u64,
    /// Processes in the tree, the server included.
    pub processes: usize,
    /// Ended children not yet reaped: their time is about to move to their parent's.
    pub zombies: usize,
}

impl Reading {
    /// The CPU time between `earlier` and this reading.
    pub fn since(self, earlier: Reading) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// The minor page faults between `earlier` and this reading.
    pub fn faults_since(self, earlier: Reading) -> u64 {
        self.faults.saturating_sub(earlier.faults)
    }
}

/// What [`tree`] sums for one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    /// Its own CPU time and its reaped children's (`cutime + cstime`), in nanoseconds.
    pub nanos: u64,
    /// `minflt + cminflt`.
    pub faults: u64,
}

/// The times and faults of one process, its reaped children's included; `None` when it is
/// gone.
///
/// `/proc/<pid>/stat` rounds each process's own time down to a whole tick (10 ms): a pool of
/// 256 prefork workers, each a few ticks' worth of work, would lose up to 2.5 s of CPU that
/// way. So a single-threaded process's own time comes from its `schedstat` (nanoseconds),
/// unless `stat` says more (it also holds the time of threads that have ended); a
/// multi-threaded one's from `stat` (one process: one tick at most is lost), as do the reaped
/// children's (summed before rounding).
pub fn process_times(pid: u32) -> Option<Times> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: fields after the last ')'
    // start with the state (field 3), so minflt (field 10) is the 8th of them, cminflt the
    // 9th, and utime (field 14) the 12th.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let sum = |range: std::ops::Range<usize>| -> Option<u64> {
        fields
            .get(range)?
            .iter()
            .map(|f| f.parse::<u64>().ok())
            .sum()
    };
    let tick = 1e9 / ticks_per_second();
    let ticks_nanos = |ticks: u64| (ticks as f64 * tick) as u64;
    // num_threads is field 20.
    let single = fields.get(17).is_some_and(|n| *n == "1");
    let stat = sum(11..13).map_or(0, ticks_nanos);
    // `schedstat` is the one thread's own: a process that had other threads (a thread per
    // client that has ended) holds their time only in `stat`, which then says more.
    let own = match single.then(|| schedstat_nanos(pid)).flatten() {
        Some(nanos) => nanos.max(stat),
        None => stat,
    };
    Some(Times {
        nanos: own + ticks_nanos(sum(13..15)?),
        faults: sum(7..8)? + sum(8..9)?,
    })
}

/// The time a process's (main) thread has run, in nanoseconds: `/proc/<pid>/schedstat`'s first
/// field.
fn schedstat_nanos(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The CPU time of `pid` and every process below it.
pub fn tree(pid: u32) -> Reading {
    let below = procfs::descendants(pid);
    let (nanos, faults) = std::iter::once(pid)
        .chain(below.iter().map(|p| p.pid))
        .filter_map(process_times)
        .fold((0, 0), |(nanos, faults), t| {
            (nanos + t.nanos, faults + t.faults)
        });
    Reading {
        nanos,
        faults,
        processes: below.len() + 1,
        zombies: below.iter().filter(|p| p.state == 'Z').count(),
    }
}

/// How long [`settled`] waits for children to end and be reaped.
const SETTLE: Duration = Duration::from_secs(5);

/// The tree's reading once it is back to at most `processes` processes and none is a zombie
/// (every child the load made has ended and been reaped), or after [`SETTLE`]; `None` then.
pub async fn settled(pid: u32, processes: usize) -> Option<Reading> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let reading = tree(pid);
        if reading.processes <= processes && reading.zombies == 0 {
            return Some(reading);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tree's reading once it is quiet: no zombies, and the same processes for 100 ms (the
/// children a warm-up made have ended and been reaped); `None` if it is not within [`SETTLE`].
pub async fn quiet(pid: u32) -> Option<Reading> {
    let deadline = Instant::now() + SETTLE;
    let mut last = procfs::descendants(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = procfs::descendants(pid);
        let same =
            now.len() == last.len() && now.iter().all(|p| last.iter().any(|q| q.pid == p.pid));
        if same && now.iter().all(|p| p.state != 'Z') {
            return Some(tree(pid));
        }
        if Instant::now() >= deadline {
            return None;
        }
        last = now;
    }
}

/// Clock ticks per second of `/proc`'s times (`USER_HZ`, 100 on Linux).
fn ticks_per_second() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_left_single_threaded_keeps_the_time_of_its_ended_threads() {
        // A program whose second thread burns CPU and ends, then waits alone: its one thread's
        // `schedstat` holds almost nothing, `stat` the burnt time.
        let script = "import threading, time, sys\n\
                      def burn():\n    t = time.process_time()\n    while time.process_time() - t < 0.3: pass\n\
                      w = threading.Thread(target=burn); w.start(); w.join()\n\
                      print('done', flush=True); time.sleep(5)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let times = process_times(child.id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line, "done\n");
        assert!(times.nanos >= 290_000_000, "{times:?}");
    }

    #[test]
    fn a_single_threaded_process_is_measured_finer_than_a_tick() {
        // A shell that counts for a few milliseconds, then waits for its `sleep`.
        let mut shell = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .unwrap();
        let pid = shell.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        while procfs::descendants(pid).is_empty() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let times = process_times(pid).unwrap();
        let _ = shell.kill();
        let _ = shell.wait();
        assert!(times.nanos > 0, "{times:?}");
        // `stat` would have said a whole number of 10 ms ticks.
        assert_ne!(times.nanos % 10_000_000, 0, "{times:?}");
    }

    #[test]
    fn a_reaped_child_counts_in_its_parent() {
        // A shell whose child burns CPU, ends and is reaped, then sleeps: its own time is next
        // to nothing, so the tree's time is the reaped child's, through `cutime`/`cstime`.
        let mut shell = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'; sleep 2; true",
            ])
            .spawn()
            .unwrap();
        let pid = shell.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        let reading = loop {
            // Only the sleep left below the shell: the busy child has been reaped.
            let below = procfs::descendants(pid);
            let sleeping = below.len() == 1
                && std::fs::read_to_string(format!("/proc/{}/comm", below[0].pid))
                    .is_ok_and(|name| name.trim() == "sleep");
            if sleeping {
                break tree(pid);
            }
            assert!(Instant::now() < deadline, "{below:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = shell.kill();
        let _ = shell.wait();
        assert!(reading.processes == 2, "{reading:?}");
        let idle = Reading {
            nanos: 0,
            faults: 0,
            processes: 1,
            zombies: 0,
        };
        assert!(
            reading.since(idle) >= Duration::from_millis(50),
            "{reading:?}"
        );
    }

    #[test]
    fn a_gone_process_has_no_times() {
        assert_eq!(process_times(u32::MAX), None);
        let times = process_times(std::process::id()).unwrap();
        assert!(
            times.faults > 0,
            "a running test has touched pages: {times:?}"
        );
    }
}
