//! What `/proc` says about a server: its process tree, memory and threads. The bench measures
//! footprints with it; the integration tests use it to see threads and children come and go.
//!
//! Memory is measured two ways. `VmRSS` counts every page a process has mapped, so summing it
//! over a forking server counts the pages its children share with their parent once per child
//! (100 idle process-per-client children read ~18× their real cost). `Pss` from
//! `/proc/<pid>/smaps_rollup` splits each shared page among the processes that map it, so it
//! adds up across a process tree; that is what [`footprint`] reports as memory.

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

/// The memory of one process from `/proc/<pid>/smaps_rollup`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident pages, shared ones counted whole (what `VmRSS` says).
    pub rss_kib: u64,
    /// Proportional set size: each resident page divided by the number of processes mapping
    /// it. Sums over processes without counting a shared page twice.
    pub pss_kib: u64,
    /// Unique set size: pages mapped by this process only (`Private_Clean + Private_Dirty`).
    pub uss_kib: u64,
    /// The anonymous part of `pss_kib` (`Pss_Anon`, Linux 5.14): stacks, heaps, buffers and the
    /// copy-on-write copies of a forked child. Unlike file pages, which every other process
    /// mapping the same binary or libc shares, these are shared only within the process tree,
    /// so what a client adds to them does not move when unrelated processes come and go.
    pub pss_anon_kib: u64,
}

/// The memory of a process, `None` when it is gone (or the kernel predates `smaps_rollup`,
/// Linux 4.14).
pub fn memory(pid: u32) -> Option<Memory> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut memory = Memory::default();
    let mut seen = false;
    for line in rollup.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let Ok(kib) = value.trim().trim_end_matches("kB").trim().parse::<u64>() else {
            continue;
        };
        match name {
            "Rss" => memory.rss_kib = kib,
            "Pss" => {
                memory.pss_kib = kib;
                seen = true;
            }
            "Private_Clean" | "Private_Dirty" => memory.uss_kib += kib,
            "Pss_Anon" => memory.pss_anon_kib = kib,
            _ => {}
        }
    }
    seen.then_some(memory)
}

/// Resets the peak resident size (`VmHWM`) of a process to its current size, so that a later
/// `VmHWM` reads the peak since now. `false` when the kernel refused (another user's process).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Memory, threads and processes of a server and everything below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// `VmRSS` summed over the processes: overstates a forking server, whose children share
    /// most of their pages with their parent. Kept for comparison; use `pss_kib`.
    pub rss_kib: u64,
    /// PSS summed over the processes: each page counted once in all, however many share it.
    pub pss_kib: u64,
    /// USS summed over the processes: pages private to one process.
    pub uss_kib: u64,
    /// `Pss_Anon` summed over the processes: what clients add to a server's memory, unmoved
    /// by other processes that map the same files.
    pub pss_anon_kib: u64,
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
    let mut footprint = Footprint {
        processes: pids.len(),
        ..Footprint::default()
    };
    for pid in pids {
        footprint.rss_kib += status_kib(pid, "VmRSS").unwrap_or(0);
        footprint.threads += threads(pid);
        // A child that ends between the listing and this read simply counts nothing.
        if let Some(memory) = memory(pid) {
            footprint.pss_kib += memory.pss_kib;
            footprint.uss_kib += memory.uss_kib;
            footprint.pss_anon_kib += memory.pss_anon_kib;
        }
    }
    footprint
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

    #[test]
    fn proportional_memory_splits_what_a_child_shares() {
        let me = std::process::id();
        let mine = memory(me).unwrap();
        assert!(mine.pss_kib > 0 && mine.uss_kib > 0);
        assert!(mine.uss_kib <= mine.pss_kib && mine.pss_kib <= mine.rss_kib);
        assert!(reset_peak(me));
        assert!(status_kib(me, "VmHWM").unwrap() >= mine.uss_kib);
        // `sleep` maps the same libc as every other process: its PSS is below its RSS.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let theirs = (0..100)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                memory(child.id()).filter(|m| m.rss_kib > 0)
            })
            .unwrap();
        assert!(theirs.pss_kib < theirs.rss_kib, "{theirs:?}");
        let both = footprint(me);
        assert!(both.pss_kib < both.rss_kib, "{both:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(memory(u32::MAX), None);
    }
}
