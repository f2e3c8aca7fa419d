//! Where the machine's CPU went during a measured run: a profile by process.
//!
//! Everything shares this machine's cores (the services, PostgreSQL, NATS,
//! Redis and the load generator itself), so the useful question is not "how
//! fast is each part" but "how many CPU milliseconds does one accepted
//! command cost, and in which process". Two snapshots of `/proc` (one before,
//! one after a run) answer it: each process's user + system time, summed per
//! program name (all PostgreSQL backends together), and the machine's busy,
//! idle and steal time from `/proc/stat`. Linux only; elsewhere the profile
//! is simply absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Program names profiled one by one; everything else is summed as `other`.
const PROGRAMS: [&str; 9] = [
    "command-api",
    "query-api",
    "projectors",
    "workers",
    "postgres",
    "nats-server",
    "redis-server",
    "loadgen",
    "pgbench",
];

/// The unit of `/proc`'s tick counts on Linux (`USER_HZ`).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU ticks per program, and the machine's totals, at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    ticks: BTreeMap<String, u64>,
    machine: Machine,
}

#[derive(Debug, Clone, Copy, Default)]
struct Machine {
    busy: u64,
    idle: u64,
    steal: u64,
}

/// What a run cost, in CPU, by program.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuProfile {
    /// Cores' worth of CPU each program used on average (1.0 = one core busy).
    pub cores_by_program: BTreeMap<String, f64>,
    /// Fraction of the machine's CPU time that was idle, and stolen by the hypervisor.
    pub idle: f64,
    pub steal: f64,
    pub cores: usize,
}

impl CpuProfile {
    /// CPU milliseconds per unit of work (e.g. per accepted command), by program.
    pub fn ms_per(&self, per_second: f64) -> BTreeMap<String, f64> {
        self.cores_by_program
            .iter()
            .map(|(p, cores)| (p.clone(), if per_second > 0.0 { cores * 1000.0 / per_second } else { 0.0 }))
            .collect()
    }

    pub fn total_cores(&self) -> f64 {
        self.cores_by_program.values().sum()
    }

    /// CPU milliseconds per unit of work, all programs together.
    pub fn total_ms_per(&self, per_second: f64) -> f64 {
        if per_second > 0.0 { self.total_cores() * 1000.0 / per_second } else { 0.0 }
    }

    /// CPU milliseconds the machine's cores allow per unit of work at `per_second` units a second.
    pub fn ms_available_per(&self, per_second: f64) -> f64 {
        self.cores as f64 * 1000.0 / per_second.max(1e-9)
    }

    /// Adds `ticks` of CPU that `program` used over `seconds`: each sampled
    /// program, and a command whose time `loadgen profile` reads at its exit.
    pub fn add(&mut self, program: &str, ticks: u64, seconds: f64) {
        if seconds > 0.0 {
            *self.cores_by_program.entry(program.to_owned()).or_insert(0.0) +=
                ticks as f64 / TICKS_PER_SEC / seconds;
        }
    }

    /// The programs and their cores, the busiest first.
    pub fn busiest(&self) -> Vec<(&str, f64)> {
        let mut rows: Vec<(&str, f64)> =
            self.cores_by_program.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows
    }
}

/// Every process now: `(pid, program, utime + stime)` (none where `/proc` is not there).
fn processes() -> Vec<(u32, String, u64)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            if let Some((program, t)) = parse_stat(&stat) {
                out.push((pid, program, t));
            }
        }
    }
    out
}

fn machine_now() -> Machine {
    std::fs::read_to_string("/proc/stat").ok().and_then(|s| parse_machine(&s)).unwrap_or_default()
}

/// The CPU counters now (empty where `/proc` is not there).
pub fn snapshot() -> Snapshot {
    let mut ticks = BTreeMap::new();
    for (_, program, t) in processes() {
        *ticks.entry(program).or_insert(0) += t;
    }
    Snapshot { ticks, machine: machine_now() }
}

/// The profile between two snapshots taken `seconds` apart.
pub fn profile(before: &Snapshot, after: &Snapshot, seconds: f64) -> Option<CpuProfile> {
    // A process that started during the run counts from zero; one that ended is lost.
    let used = after.ticks.iter().map(|(program, t)| {
        (program.as_str(), t.saturating_sub(before.ticks.get(program).copied().unwrap_or(0)))
    });
    build(used, before.machine, after.machine, seconds)
}

/// A process followed by [`Tracker`]: its program and CPU ticks when first and last seen.
struct Seen {
    program: String,
    first: u64,
    last: u64,
}

/// Every process's CPU, sampled over a run, so that one that ends before the
/// run does (a command's database sessions, which close as it exits) still
/// counts up to its last sample; [`snapshot`] at both ends would lose it.
pub struct Tracker {
    seen: BTreeMap<u32, Seen>,
    machine_first: Machine,
    machine_last: Machine,
}

impl Tracker {
    pub fn start() -> Self {
        let seen = processes()
            .into_iter()
            .map(|(pid, program, t)| (pid, Seen { program, first: t, last: t }))
            .collect();
        let machine = machine_now();
        Self { seen, machine_first: machine, machine_last: machine }
    }

    /// Samples every process but `skip` (one whose time is counted otherwise);
    /// one that started since the start counts from zero.
    pub fn sample(&mut self, skip: Option<u32>) {
        self.record(processes(), machine_now(), skip);
    }

    fn record(&mut self, processes: Vec<(u32, String, u64)>, machine: Machine, skip: Option<u32>) {
        for (pid, program, t) in processes {
            if Some(pid) == skip {
                continue;
            }
            let seen = self.seen.entry(pid).or_insert(Seen { program: String::new(), first: 0, last: 0 });
            seen.program = program;
            seen.last = t;
        }
        self.machine_last = machine;
    }

    /// The profile from the start to the last sample, `seconds` apart.
    pub fn profile(&self, seconds: f64) -> Option<CpuProfile> {
        let used = self.seen.values().map(|s| (s.program.as_str(), s.last.saturating_sub(s.first)));
        build(used, self.machine_first, self.machine_last, seconds)
    }
}

/// A profile from the ticks each program used and the machine's counters at both ends.
fn build<'a>(
    used: impl Iterator<Item = (&'a str, u64)>,
    before: Machine,
    after: Machine,
    seconds: f64,
) -> Option<CpuProfile> {
    let total =
        (after.busy + after.idle + after.steal).checked_sub(before.busy + before.idle + before.steal)?;
    if total == 0 || seconds <= 0.0 {
        return None;
    }
    let mut profile = CpuProfile {
        cores_by_program: BTreeMap::new(),
        idle: (after.idle.saturating_sub(before.idle)) as f64 / total as f64,
        steal: (after.steal.saturating_sub(before.steal)) as f64 / total as f64,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    for (program, ticks) in used.filter(|(_, t)| *t > 0) {
        profile.add(program, ticks, seconds);
    }
    Some(profile)
}

/// The CPU ticks of this process's children that it has waited for (`cutime +
/// cstime` of `/proc/self/stat`): a child's whole CPU time, once it has ended.
pub fn waited_children_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| parse_children(&s)).unwrap_or(0)
}

/// `cutime + cstime` from a `/proc/<pid>/stat` line.
fn parse_children(stat: &str) -> Option<u64> {
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    // After the name: cutime is field 16 of the line, cstime 17.
    Some(fields.get(13)?.parse::<u64>().ok()? + fields.get(14)?.parse::<u64>().ok()?)
}

/// `(program, utime + stime)` from a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    // The command name sits in parentheses and may itself contain spaces or ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    // After the name: state is field 3 of the line, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let program = PROGRAMS.iter().find(|p| comm.starts_with(**p)).map_or("other", |p| p);
    Some((program.to_owned(), utime + stime))
}

/// Busy, idle (+ iowait) and steal ticks from the `cpu` line of `/proc/stat`.
fn parse_machine(stat: &str) -> Option<Machine> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Some(Machine { busy: get(0) + get(1) + get(2) + get(5) + get(6), idle: get(3) + get(4), steal: get(7) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_program_and_its_cpu_ticks() {
        let line = "4242 (postgres: smartpos smartpos_bench 127.0.0.1(5) idle) S 1 2 3 0 -1 4194560 \
                    10 0 0 0 150 25 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("postgres".to_owned(), 175)));
        let other = "7 (kworker/0:1) I 2 0 0 0 -1 69238880 0 0 0 0 3 4 0 0 20 0 1 0 10 0 0";
        assert_eq!(parse_stat(other), Some(("other".to_owned(), 7)));
    }

    #[test]
    fn a_stat_line_gives_the_cpu_of_waited_for_children() {
        let line = "4242 (loadgen) S 1 2 3 0 -1 4194560 10 0 0 0 150 25 7000 1200 20 0 1 0 100 0 0";
        assert_eq!(parse_children(line), Some(8200));
        let mut p = CpuProfile::default();
        p.add("posctl", 8200, 41.0);
        assert!((p.cores_by_program["posctl"] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_tracked_process_that_ends_still_counts_up_to_its_last_sample() {
        let machine = |busy| Machine { busy, idle: 1000, steal: 0 };
        let seen = Seen { program: "postgres".into(), first: 100, last: 100 };
        let mut t = Tracker { seen: [(1, seen)].into(), machine_first: machine(0), machine_last: machine(0) };
        let pg = |pid, ticks| (pid, "postgres".to_owned(), ticks);
        // A session already there used 50 ticks, then ended; one that began used 60; the skipped one is not counted.
        t.record(vec![pg(1, 150), pg(2, 30), (3, "posctl".to_owned(), 500)], machine(100), Some(3));
        t.record(vec![pg(2, 60), (3, "posctl".to_owned(), 900)], machine(200), Some(3));
        let p = t.profile(1.1).expect("profile");
        assert!((p.cores_by_program["postgres"] - 1.0).abs() < 1e-9, "{p:?}");
        assert!(!p.cores_by_program.contains_key("posctl"), "{p:?}");
        // Two snapshots would have seen only the session that was there at both ends: none.
        let before = Snapshot { ticks: [("postgres".to_owned(), 100)].into(), machine: machine(0) };
        let after = Snapshot { ticks: [("postgres".to_owned(), 60)].into(), machine: machine(200) };
        assert!(profile(&before, &after, 1.1).expect("profile").cores_by_program.is_empty());
    }

    #[test]
    fn the_profile_is_cores_per_program_over_the_interval() {
        let mut before = Snapshot::default();
        before.ticks.insert("postgres".into(), 100);
        before.machine = Machine { busy: 1000, idle: 1000, steal: 0 };
        let mut after = before.clone();
        after.ticks.insert("postgres".into(), 300); // 2 s of CPU
        after.ticks.insert("command-api".into(), 50); // started during the run
        after.machine = Machine { busy: 1600, idle: 1300, steal: 100 };
        let p = profile(&before, &after, 2.0).expect("profile");
        assert!((p.cores_by_program["postgres"] - 1.0).abs() < 1e-9);
        assert!((p.cores_by_program["command-api"] - 0.25).abs() < 1e-9);
        assert!((p.idle - 0.3).abs() < 1e-9 && (p.steal - 0.1).abs() < 1e-9);
        assert!((p.ms_per(500.0)["postgres"] - 2.0).abs() < 1e-9);
    }
}
