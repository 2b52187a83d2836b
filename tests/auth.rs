//! Authentication and TLS of the engine endpoint: the engine client authenticates with a
//! token or user:password against a token-protected coordinator and gets Milvus's
//! UNAUTHENTICATED answers otherwise; `coordinator --tls-cert/--tls-key` serves TLS that
//! the client (`plan`, with `SSL_CERT_FILE`) verifies; `up --auth-token-file` protects
//! its embedded coordinator and still reconciles through it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use collection_operator::client::{ClientError, Credentials, EngineClient};
use collection_operator::coordinator::{
    Authenticator, EngineConfig, Security, open_engine_async, serve_with,
};
use collection_operator::plan::Action;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const TOKEN: &str = "s3cret-token";
const USER: &str = "alice";
const PASSWORD: &str = "wonder:land"; // a ':' in the password is fine

/// A token-protected coordinator in this process; stops when dropped.
struct Protected {
    endpoint: String,
    _data: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn protected() -> Protected {
    let data = tempfile::tempdir().expect("tempdir");
    let (engine, _) = open_engine_async(data.path().to_path_buf(), EngineConfig::default())
        .await
        .expect("engine");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let security = Security {
        authenticator: Some(Authenticator::new([
            TOKEN.to_string(),
            format!("{USER}:{PASSWORD}"),
        ])),
        tls: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with(engine, listener, security, async {
        let _ = stopped.await;
    }));
    Protected {
        endpoint: format!("http://{addr}"),
        _data: data,
        _stop: stop,
    }
}

fn unauthenticated(result: Result<EngineClient, ClientError>) -> String {
    match result {
        Err(ClientError::Unreachable { message, .. }) => {
            assert!(
                message.contains("does not have valid authentication credentials"),
                "{message}"
            );
            message
        }
        Err(other) => panic!("expected a refused connection, got {other}"),
        Ok(_) => panic!("connected without valid credentials"),
    }
}

#[tokio::test]
async fn engine_client_authenticates_with_token_or_user_password() {
    let server = protected().await;
    let token = Credentials::Token(TOKEN.into());
    let mut client = EngineClient::connect(&server.endpoint, Some(&token))
        .await
        .expect("token accepted");
    client
        .apply(&Action::CreateDatabase {
            database: "authdb".into(),
        })
        .await
        .expect("an RPC after Connect carries the header too");
    assert!(client.databases().await.expect("list").contains("authdb"));

    let user = Credentials::UserPassword(USER.into(), PASSWORD.into());
    let mut client = EngineClient::connect(&server.endpoint, Some(&user))
        .await
        .expect("user:password accepted");
    assert!(
        client
            .server_version()
            .await
            .expect("version")
            .contains("v2.5")
    );
}

#[tokio::test]
async fn engine_client_gets_milvus_unauthenticated_answers() {
    let server = protected().await;
    let message = unauthenticated(EngineClient::connect(&server.endpoint, None).await);
    assert!(
        message.contains("missing authorization in header"),
        "{message}"
    );

    let wrong = Credentials::Token("nope".into());
    let message = unauthenticated(EngineClient::connect(&server.endpoint, Some(&wrong)).await);
    assert!(
        message.contains("auth check failure, please check api key is correct"),
        "{message}"
    );
    assert!(
        !message.contains("nope"),
        "the secret is not echoed: {message}"
    );

    let wrong = Credentials::UserPassword(USER.into(), "wrong".into());
    let message = unauthenticated(EngineClient::connect(&server.endpoint, Some(&wrong)).await);
    assert!(
        message.contains("auth check failure, please check username and password are correct"),
        "{message}"
    );
}

// ---- the real binary: TLS and `up` ----

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("process exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A folder with the example Collection `products-v1` and the alias `products` to it.
fn manifests(dir: &Path) -> PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    for name in ["products-v1.yaml", "products.yaml"] {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        std::fs::copy(source, manifests.join(name)).expect("copy");
    }
    manifests
}

async fn plan(
    manifests: &Path,
    coordinator: &str,
    token: Option<&str>,
    ca: Option<&Path>,
) -> Output {
    let mut command = Command::new(common::binary());
    command
        .arg("plan")
        .arg("-f")
        .arg(manifests)
        .args(["--coordinator", coordinator])
        .env("RUST_LOG", "warn")
        .env_remove("MILVUS_TOKEN")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(token) = token {
        command.env("MILVUS_TOKEN", token);
    }
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    tokio::task::spawn_blocking(move || command.output().expect("plan runs"))
        .await
        .expect("plan task")
}

#[tokio::test]
async fn coordinator_serves_tls_and_plan_verifies_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = common::certificate(dir.path());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("write tokens");
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut child = Command::new(common::binary())
        .args(["coordinator", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &addr.to_string(), "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--auth-token-file")
        .arg(&tokens)
        .env("RUST_LOG", "warn")
        .env_remove("COORDINATOR_AUTH_TOKENS")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("coordinator starts");
    wait_listening(addr, &mut child);
    let _child = Killed(child);
    let https = format!("https://127.0.0.1:{port}");
    let manifests = manifests(dir.path());

    // Trusted certificate and a valid token: plan observes the engine (changes: exit 2).
    let output = plan(&manifests, &https, Some(TOKEN), Some(&cert)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");

    // Trusted certificate, no token: Milvus's answer.
    let output = plan(&manifests, &https, None, Some(&cert)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing authorization in header"),
        "{stderr}"
    );

    // Certificate not trusted (SSL_CERT_FILE points at an unrelated certificate).
    let other = tempfile::tempdir().expect("tempdir");
    let (unrelated, _) = common::certificate(other.path());
    let output = plan(&manifests, &https, Some(TOKEN), Some(&unrelated)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // Plaintext against the TLS port fails.
    let output = plan(
        &manifests,
        &format!("http://127.0.0.1:{port}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
}

#[tokio::test]
async fn coordinator_refuses_to_start_with_bad_security_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n \n").expect("write");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec!["--auth-token-file".into(), empty.clone().into()],
            "no credential",
        ),
        (
            vec!["--auth-token-file".into(), dir.path().join("absent").into()],
            "reading token file",
        ),
        (
            vec![
                "--tls-cert".into(),
                garbage.clone().into(),
                "--tls-key".into(),
                garbage.clone().into(),
            ],
            "not usable",
        ),
        (
            vec!["--tls-cert".into(), garbage.clone().into()],
            "--tls-key",
        ),
    ];
    for (args, expected) in cases {
        let mut command = Command::new(common::binary());
        command
            .args(["coordinator", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .env("RUST_LOG", "warn")
            .env_remove("COORDINATOR_AUTH_TOKENS");
        let output = tokio::task::spawn_blocking(move || command.output().expect("runs"))
            .await
            .expect("task");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn up_protects_its_coordinator_and_still_reconciles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = manifests(dir.path());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n{USER}:{PASSWORD}\n")).expect("write tokens");
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut child = Command::new(common::binary())
        .arg("up")
        .arg("--manifests")
        .arg(&manifests)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &addr.to_string(), "--auth-token-file"])
        .arg(&tokens)
        .env("RUST_LOG", "warn")
        .env("COORDINATOR_AUTH_TOKENS", "from-env")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("up starts");
    wait_listening(addr, &mut child);
    let _child = Killed(child);
    let endpoint = format!("http://{addr}");

    unauthenticated(EngineClient::connect(&endpoint, None).await);
    // The environment token, the file's: all accepted.
    for credentials in [
        Credentials::Token("from-env".into()),
        Credentials::UserPassword(USER.into(), PASSWORD.into()),
    ] {
        EngineClient::connect(&endpoint, Some(&credentials))
            .await
            .expect("accepted");
    }
    let mut client = EngineClient::connect(&endpoint, Some(&Credentials::Token(TOKEN.into())))
        .await
        .expect("accepted");
    // up's own client got through: the alias of the manifests appears.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client
            .alias_target("default", "products")
            .await
            .expect("describe")
            == Some("products_v1".to_string())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "up did not reconcile within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
