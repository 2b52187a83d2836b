//! History cost benchmark: peak memory, restart time and file size of the real coordinator
//! binary after histories that used to grow quadratically or by whole records, all inside
//! the default one-hour retention window. Prints figures; asserts only that nothing was
//! lost.
//!
//! Each scenario fills a fresh data directory, kills the process with SIGKILL (so the
//! restart replays what the store holds), then restarts three times: restart is process
//! start → the first DescribeCollection answered from the recovered table; peak RSS is the
//! restarted process's VmHWM after that answer.
//!
//! `cargo bench --bench history`. Environment: `BENCH_HISTORY_ALIASES` (aliases on one
//! collection, comma separated, default `10000,50000`), `BENCH_HISTORY_TOGGLES` (load /
//! release calls and partition create / drop calls on a 1 MiB collection record, default
//! 1000), `BENCH_HISTORY_DDLS` (DDLs of the large run: 1% collections, the rest aliases
//! spread over them; default 100000), `BENCH_HISTORY_CLIENTS` (default 16).

mod support;

use support::{check, schema};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collection_operator::proto::api::milvus_service_client::MilvusServiceClient;
use collection_operator::proto::api::*;
use collection_operator::proto::common::{KeyValuePair, Status};
use tonic::transport::Channel;

type Client = MilvusServiceClient<Channel>;

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(data_dir: &Path) -> anyhow::Result<(Self, Instant)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_collection-operator"))
            .args(["coordinator", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(300);
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "coordinator did not start");
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok((Self { child, addr }, started))
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(MilvusServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    fn peak_rss_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0)
            >> 10
    }

    fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// A scenario that fails leaves no process behind.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create_collection(
    client: &mut Client,
    name: &str,
    properties: Vec<KeyValuePair>,
) -> anyhow::Result<()> {
    let request = CreateCollectionRequest {
        collection_name: name.into(),
        schema: schema(name),
        shards_num: 1,
        properties,
        ..Default::default()
    };
    check(
        &client.create_collection(request).await?.into_inner(),
        "CreateCollection",
    )
}

async fn create_alias(client: &mut Client, collection: &str, alias: &str) -> anyhow::Result<()> {
    let request = CreateAliasRequest {
        collection_name: collection.into(),
        alias: alias.into(),
        ..Default::default()
    };
    check(
        &client.create_alias(request).await?.into_inner(),
        "CreateAlias",
    )
}

/// Runs `work(client, i)` for every `i < count`, `clients` connections wide.
async fn spread<F, Fut>(
    server: &Server,
    count: usize,
    clients: usize,
    work: F,
) -> anyhow::Result<()>
where
    F: Fn(Client, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Client>> + Send,
{
    let mut tasks = Vec::new();
    for w in 0..clients {
        let mut client = server.client().await?;
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(clients) {
                client = work(client, i).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Kills the filled server, restarts three times; returns a table row.
async fn restart_row(
    label: &str,
    data: &Path,
    filler: Server,
    fill: Duration,
    probe: &str,
    expect_aliases: usize,
) -> anyhow::Result<String> {
    let fill_rss = filler.peak_rss_mib();
    filler.kill9()?;
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..3 {
        let (server, started) = Server::start(data)?;
        let mut client = server.client().await?;
        let described = client
            .describe_collection(DescribeCollectionRequest {
                collection_name: probe.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        times.push(started.elapsed());
        check(
            described.status.as_ref().unwrap_or(&Status::default()),
            "Describe",
        )?;
        anyhow::ensure!(
            described.aliases.len() == expect_aliases,
            "{label}: {} aliases after the restart, expected {expect_aliases}",
            described.aliases.len()
        );
        rss.push(server.peak_rss_mib());
        server.kill9()?;
    }
    times.sort();
    rss.sort();
    let file_mib = std::fs::metadata(data.join("meta.redb"))?.len() as f64 / (1 << 20) as f64;
    Ok(format!(
        "| {label} | {:.1} s | {fill_rss} MiB | {:.0} ms | {:.0} ms | {} MiB | {file_mib:.1} MiB |",
        fill.as_secs_f64(),
        times[1].as_secs_f64() * 1000.0,
        times[2].as_secs_f64() * 1000.0,
        rss[1],
    ))
}

async fn aliases_on_one_collection(aliases: usize, clients: usize) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (server, _) = Server::start(&data)?;
    let started = Instant::now();
    create_collection(&mut server.client().await?, "base", Vec::new()).await?;
    spread(&server, aliases, clients, |mut client, i| async move {
        create_alias(&mut client, "base", &format!("a{i}")).await?;
        Ok(client)
    })
    .await?;
    let fill = started.elapsed();
    restart_row(
        &format!("{aliases} aliases on one collection"),
        &data,
        server,
        fill,
        "base",
        aliases,
    )
    .await
}

/// `toggles` calls that change a collection whose record is 1 MiB: load / release, or
/// create / drop partition (a new version of the record itself).
async fn large_record_changes(toggles: usize, partitions: bool) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (server, _) = Server::start(&data)?;
    let mut client = server.client().await?;
    // 1 MiB within the request bounds: 16 properties of 64 KiB.
    let blob = (0..16)
        .map(|i| KeyValuePair {
            key: format!("blob{i}"),
            value: "x".repeat(64 << 10),
        })
        .collect();
    let started = Instant::now();
    create_collection(&mut client, "big", blob).await?;
    for i in 0..toggles {
        let status = match (partitions, i % 2 == 0) {
            (false, true) => client
                .load_collection(LoadCollectionRequest {
                    collection_name: "big".into(),
                    ..Default::default()
                })
                .await?
                .into_inner(),
            (false, false) => client
                .release_collection(ReleaseCollectionRequest {
                    collection_name: "big".into(),
                    ..Default::default()
                })
                .await?
                .into_inner(),
            (true, true) => client
                .create_partition(CreatePartitionRequest {
                    collection_name: "big".into(),
                    partition_name: "p".into(),
                    ..Default::default()
                })
                .await?
                .into_inner(),
            (true, false) => client
                .drop_partition(DropPartitionRequest {
                    collection_name: "big".into(),
                    partition_name: "p".into(),
                    ..Default::default()
                })
                .await?
                .into_inner(),
        };
        check(&status, "toggle")?;
    }
    let fill = started.elapsed();
    let what = if partitions {
        "create/drop partition"
    } else {
        "load/release"
    };
    restart_row(
        &format!("{toggles} {what} of a 1 MiB collection record"),
        &data,
        server,
        fill,
        "big",
        0,
    )
    .await
}

/// `ddls` DDLs: 1% collections, the rest aliases spread evenly over them.
async fn many_ddls(ddls: usize, clients: usize) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (server, _) = Server::start(&data)?;
    let collections = (ddls / 100).max(1);
    let aliases = ddls - collections;
    let started = Instant::now();
    spread(&server, collections, clients, |mut client, i| async move {
        create_collection(&mut client, &format!("c{i}"), Vec::new()).await?;
        Ok(client)
    })
    .await?;
    spread(&server, aliases, clients, move |mut client, i| async move {
        create_alias(
            &mut client,
            &format!("c{}", i % collections),
            &format!("a{i}"),
        )
        .await?;
        Ok(client)
    })
    .await?;
    let fill = started.elapsed();
    let per_collection = aliases.div_ceil(collections);
    restart_row(
        &format!("{ddls} DDLs: {collections} collections, {aliases} aliases"),
        &data,
        server,
        fill,
        "c0",
        per_collection,
    )
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let alias_counts = env_list("BENCH_HISTORY_ALIASES", "10000,50000");
    let toggles = env_list("BENCH_HISTORY_TOGGLES", "1000");
    let ddls = env_list("BENCH_HISTORY_DDLS", "100000");
    let clients = env_list("BENCH_HISTORY_CLIENTS", "16")
        .first()
        .copied()
        .unwrap_or(16)
        .max(1);
    println!(
        "history benchmark: default retention (1 h), --history-max-entries and --history-max-mib at their defaults, {clients} clients"
    );
    println!();
    println!(
        "| history | fill | fill peak RSS | restart p50 | restart max | restarted peak RSS | meta.redb |"
    );
    println!("|---|---|---|---|---|---|---|");
    for aliases in alias_counts {
        println!("{}", aliases_on_one_collection(aliases, clients).await?);
    }
    for toggles in toggles {
        println!("{}", large_record_changes(toggles, false).await?);
        println!("{}", large_record_changes(toggles, true).await?);
    }
    for ddls in ddls {
        println!("{}", many_ddls(ddls, clients).await?);
    }
    Ok(())
}
