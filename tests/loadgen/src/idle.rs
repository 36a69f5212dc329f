//! Idle connections held open: opens `conns` echo connections (each confirmed by one tiny round
//! trip), reads the RSS of the watched processes (edge, hub) before and with them, checks
//! every connection once more, then closes them all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::echo::EchoConn;
use crate::stats::{rss_kib, Tally};

/// Time for the watched processes to settle after the last connection opened.
const SETTLE: Duration = Duration::from_millis(500);

/// A process whose memory is read: `name=pid` on the command line.
#[derive(Clone, Debug)]
pub(crate) struct Watched {
    name: String,
    pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let Some((name, pid)) = text.split_once('=') else {
            bail!("expected NAME=PID, got {text:?}");
        };
        let pid = pid.parse().with_context(|| format!("pid in {text:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            pid,
        })
    }
}

pub(crate) async fn idle(
    addr: SocketAddr,
    conns: usize,
    parallel: usize,
    watched: &[Watched],
) -> Result<()> {
    let before = read_rss(watched)?;
    let started = Instant::now();
    let (groups, opening) = open_all(addr, conns, parallel.max(1)).await?;
    let open_seconds = started.elapsed().as_secs_f64();
    let opened: usize = groups.iter().map(Vec::len).sum();
    tokio::time::sleep(SETTLE).await;
    let with = read_rss(watched)?;
    let (held, checking) = confirm_all(groups).await?;
    println!(
        "{}",
        json!({
            "kind": "idle", "requested": conns, "opened": opened, "held": held,
            "errors": opening.errors() + checking.errors(),
            "open_seconds": open_seconds, "open_p99_us": opening.quantile_us(0.99),
            "rss": rss_report(watched, &before, &with, opened),
        })
    );
    Ok(())
}

fn read_rss(watched: &[Watched]) -> Result<Vec<u64>> {
    watched.iter().map(|process| rss_kib(process.pid)).collect()
}

/// Per watched process and in total: RSS before, with the connections, and bytes per connection.
fn rss_report(watched: &[Watched], before: &[u64], with: &[u64], opened: usize) -> Value {
    if watched.is_empty() {
        return Value::Null;
    }
    let per_conn =
        |before: u64, with: u64| (with as f64 - before as f64) * 1024.0 / opened.max(1) as f64;
    let mut report = serde_json::Map::new();
    for ((process, &before), &with) in watched.iter().zip(before).zip(with) {
        report.insert(
            process.name.clone(),
            json!({"pid": process.pid, "before_kib": before, "with_kib": with,
                   "bytes_per_conn": per_conn(before, with)}),
        );
    }
    let (before, with) = (before.iter().sum(), with.iter().sum());
    report.insert(
        "total".to_owned(),
        json!({"before_kib": before, "with_kib": with, "bytes_per_conn": per_conn(before, with)}),
    );
    Value::Object(report)
}

/// Opens `conns` connections from `parallel` tasks; each task keeps its group open.
async fn open_all(
    addr: SocketAddr,
    conns: usize,
    parallel: usize,
) -> Result<(Vec<Vec<EchoConn>>, Tally)> {
    let mut tasks = JoinSet::new();
    for task in 0..parallel {
        let share = conns / parallel + usize::from(task < conns % parallel);
        tasks.spawn(open_group(addr, share));
    }
    let mut groups = Vec::new();
    let mut tally = Tally::new()?;
    while let Some(result) = tasks.join_next().await {
        let (group, group_tally) = result??;
        groups.push(group);
        tally.merge(&group_tally)?;
    }
    Ok((groups, tally))
}

async fn open_group(addr: SocketAddr, count: usize) -> Result<(Vec<EchoConn>, Tally)> {
    let mut group = Vec::with_capacity(count);
    let mut tally = Tally::new()?;
    for _ in 0..count {
        let started = Instant::now();
        match open_confirmed(addr).await {
            Ok(conn) => {
                tally.record(started.elapsed())?;
                group.push(conn);
            }
            Err(error) => tally.fail(&error),
        }
    }
    Ok((group, tally))
}

async fn open_confirmed(addr: SocketAddr) -> Result<EchoConn> {
    let mut conn = EchoConn::open(addr, 1).await?;
    conn.round_trip().await?;
    Ok(conn)
}

/// One more round trip on every connection; returns how many still answer. Closes them all.
async fn confirm_all(groups: Vec<Vec<EchoConn>>) -> Result<(usize, Tally)> {
    let mut tasks = JoinSet::new();
    for group in groups {
        tasks.spawn(confirm_group(group));
    }
    let mut tally = Tally::new()?;
    while let Some(result) = tasks.join_next().await {
        tally.merge(&result??)?;
    }
    Ok((tally.count() as usize, tally))
}

async fn confirm_group(group: Vec<EchoConn>) -> Result<Tally> {
    let mut tally = Tally::new()?;
    for mut conn in group {
        match conn.round_trip().await {
            Ok(rtt) => tally.record(rtt)?,
            Err(error) => tally.fail(&error),
        }
    }
    Ok(tally)
}
