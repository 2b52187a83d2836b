//! WAL benchmarks against the real binaries (release build, fsync on every acknowledged
//! group): one coordinator, streaming nodes on a shared WAL directory, one pchannel.
//! Prints figures; asserts nothing.
//!
//! - Produce throughput: 1 KiB records on one producer stream, pipelined (`BENCH_WINDOW`
//!   in flight, default 256) and one at a time;
//! - Consume catch-up: reading everything from the start;
//! - Failover: from kill -9 of the holder to the first acknowledged write on the next
//!   holder (lease 1 s, grace 0.3 s; the default 10 s + 5 s is proportionally longer).
//!
//! Environment: `BENCH_RECORDS` (default 20000), `BENCH_WINDOW`, `BENCH_FAILOVERS`
//! (default 3).

mod support;

use support::{env_usize, free_port};

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collection_operator::proto::streaming::deliver_policy;
use collection_operator::streaming::client::{self, Discovery, Producer, message};
use tokio_stream::StreamExt;

struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], address: String) -> anyhow::Result<Proc> {
    let child = Command::new(env!("CARGO_BIN_EXE_collection-operator"))
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&address).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{address} did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Proc(child, address))
}

fn node(coordinator: &str, wal: &Path) -> anyhow::Result<Proc> {
    let address = format!("127.0.0.1:{}", free_port()?);
    let wal = wal.display().to_string();
    let url = format!("http://{coordinator}");
    spawn(
        &[
            "streaming-node",
            "--coordinator",
            &url,
            "--wal-dir",
            &wal,
            "--listen",
            &address,
        ],
        address.clone(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records = env_usize("BENCH_RECORDS", 20_000);
    let window = env_usize("BENCH_WINDOW", 256).max(1);
    let failovers = env_usize("BENCH_FAILOVERS", 3);
    let dir = tempfile::tempdir()?;
    let wal = dir.path().join("wal");
    let meta = dir.path().join("meta").display().to_string();
    let coordinator_address = format!("127.0.0.1:{}", free_port()?);
    let _coordinator = spawn(
        &[
            "coordinator",
            "--data-dir",
            &meta,
            "--listen",
            &coordinator_address,
            "--pchannels",
            "1",
            "--streaming-lease-ms",
            "1000",
            "--streaming-grace-ms",
            "300",
        ],
        coordinator_address.clone(),
    )?;
    let mut nodes = vec![node(&coordinator_address, &wal)?];
    let mut discovery = Discovery::start(&coordinator_address).await?;
    let view = discovery
        .wait_for(Duration::from_secs(30), |v| v.channels.len() == 1)
        .await
        .ok_or_else(|| anyhow::anyhow!("pchannel not assigned"))?;
    let placement = view
        .channels
        .values()
        .next()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no channel"))?;
    let payload = vec![7u8; 1024];

    // Produce, pipelined.
    let mut producer = Producer::open(&placement.address, placement.channel.clone()).await?;
    let started = Instant::now();
    let mut in_flight = VecDeque::new();
    for _ in 0..records {
        if in_flight.len() >= window {
            producer.receive().await?.1?;
            in_flight.pop_front();
        }
        in_flight.push_back(producer.send(message(payload.clone(), &[])).await?);
    }
    while in_flight.pop_front().is_some() {
        producer.receive().await?.1?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "produce (1 pchannel, 1 KiB, fsync, {window} in flight): {records} records in {elapsed:.2} s = {:.0} records/s, {:.1} MB/s",
        records as f64 / elapsed,
        records as f64 * 1024.0 / elapsed / 1e6
    );

    // Produce, one at a time (each waits for its own fsync).
    let sequential = (records / 10).max(100);
    let started = Instant::now();
    for _ in 0..sequential {
        producer.produce(message(payload.clone(), &[])).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "produce (1 in flight): {sequential} records in {elapsed:.2} s = {:.0} records/s, {:.2} ms per acknowledged record",
        sequential as f64 / elapsed,
        elapsed * 1000.0 / sequential as f64
    );

    // Consume catch-up.
    let total = records + sequential;
    let mut stream = Box::pin(
        client::consume(
            &placement.address,
            placement.channel.clone(),
            deliver_policy::Policy::All(()),
        )
        .await?,
    );
    let started = Instant::now();
    let mut seen = 0;
    while seen < total {
        match stream.next().await {
            Some(Ok(record)) if !record.payload.is_empty() => seen += 1,
            Some(Ok(_)) => {}
            other => anyhow::bail!("consume ended: {other:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "consume catch-up: {seen} records in {elapsed:.2} s = {:.0} records/s, {:.1} MB/s",
        seen as f64 / elapsed,
        seen as f64 * 1024.0 / elapsed / 1e6
    );
    drop(stream);

    // Failover: kill -9 the holder, time until a write is acknowledged on the next one.
    let mut times = Vec::new();
    for _ in 0..failovers {
        nodes.push(node(&coordinator_address, &wal)?);
        let current = discovery
            .current()
            .channels
            .values()
            .next()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no channel"))?;
        let index = nodes
            .iter()
            .position(|n| n.1 == current.address)
            .ok_or_else(|| anyhow::anyhow!("holder not ours"))?;
        let mut victim = nodes.remove(index);
        let killed = Instant::now();
        let _ = victim.0.kill();
        let _ = victim.0.wait();
        loop {
            let view = discovery
                .wait_for(Duration::from_secs(30), |v| {
                    v.channels
                        .values()
                        .any(|p| p.server_id != current.server_id)
                })
                .await
                .ok_or_else(|| anyhow::anyhow!("no failover"))?;
            let Some(next) = view.channels.values().next().cloned() else {
                continue;
            };
            if let Ok(mut producer) = Producer::open(&next.address, next.channel.clone()).await
                && producer
                    .produce(message(payload.clone(), &[]))
                    .await
                    .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(killed.elapsed());
    }
    if !times.is_empty() {
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "failover (kill -9 → first acknowledged write on the next holder; lease 1 s, grace 0.3 s): {:?} mean of {}, runs {:?}",
            mean,
            times.len(),
            times
        );
    }
    Ok(())
}
