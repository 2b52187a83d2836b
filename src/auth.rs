//! Optional authentication of the gRPC endpoints (the coordinator's, and the WAL plane's:
//! the streaming endpoints of the coordinator and the streaming nodes), answering exactly
//! as Milvus does when `common.security.authorizationEnabled` is on. It sits below both
//! servers, so that the streaming node checks and presents credentials without knowing
//! the coordinator.
//!
//! # What clients send
//!
//! pymilvus (and [`crate::client::EngineClient`]) send the `authorization` metadata header
//! on every call, Connect included: base64 (standard alphabet, padded) of the token, or of
//! `user:password` when a user and password are given (pymilvus 3.0.2
//! `client/grpc_handler.py` `_setup_authorization_interceptor`).
//!
//! # What Milvus answers
//!
//! Measured on Milvus 2.3.5 (PyPI `milvus==2.3.5`, `authorization_enabled=True`, inside
//! `unshare -n`) with raw stubs on Connect, ShowCollections, GetVersion, CheckHealth and
//! DescribeAlias; the same texts are in `internal/proxy/authentication_interceptor.go`
//! (milvus-io/milvus master, `AuthenticationInterceptor`). Every RPC, Connect included,
//! fails with the gRPC status **`UNAUTHENTICATED` (16)**, not with a `common.Status`:
//!
//! | request | message |
//! |---|---|
//! | no `authorization` header | `missing authorization in header` |
//! | value is not base64 (e.g. `Bearer …`) | `invalid token format` |
//! | decoded value without `:` (an API key; also the empty value) not accepted | `auth check failure, please check api key is correct` |
//! | decoded `user:password` not accepted | `auth check failure, please check username and password are correct` |
//!
//! pymilvus 3.0.2 turns any of these during `MilvusClient(...)` into
//! `MilvusException(code=2 /* CONNECT_FAILED */, message="Fail connecting to server on
//! HOST:PORT, illegal connection params or server unavailable")` whose `__cause__` is the
//! `grpc.RpcError` above (measured; `grpc_handler.py` `_wait_for_channel_ready`), and does
//! not retry `UNAUTHENTICATED` (`decorators.py` `IGNORE_RETRY_CODES`).
//!
//! # What is accepted
//!
//! A fixed set of credentials (see [`AuthArgs`]); a request is accepted when the decoded
//! header equals one of them byte for byte. A `user:password` entry is compared as a
//! whole, like a token: there are no users or roles. Only SHA-256 digests of the accepted
//! credentials are kept, and the digest of the presented value is compared with each of
//! them in constant time. Secrets are never logged: rejections are logged (at debug) by
//! reason only, reloads by count only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use parking_lot::RwLock;
use tonic::{Request, Status};

/// Environment variable with accepted credentials, comma-separated.
pub const TOKENS_ENV: &str = "COORDINATOR_AUTH_TOKENS";

/// The metadata header pymilvus sends the credentials in.
pub const HEADER: &str = "authorization";

/// How often a token file is checked for changes (a mounted Secret is updated in place).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Flags that turn authentication on (shared by `coordinator` and `up`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Require credentials: a file with the accepted tokens, one per line; a token may be
    /// `user:password` (what pymilvus sends for `user=`/`password=`). Blank lines and
    /// surrounding whitespace are ignored. The file is re-read when it changes (a
    /// rotated Secret). Tokens may also be given, comma-separated, in the environment
    /// variable COORDINATOR_AUTH_TOKENS; with neither, the endpoint is open.
    #[arg(long, env = "COORDINATOR_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub auth_token_file: Option<PathBuf>,
}

/// Where the accepted credentials come from.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `--auth-token-file`: re-read when it changes.
    pub token_file: Option<PathBuf>,
    /// Fixed credentials (from [`TOKENS_ENV`]).
    pub tokens: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("AuthConfig")
            .field("token_file", &self.token_file)
            .field("tokens", &format_args!("[{} hidden]", self.tokens.len()))
            .finish()
    }
}

impl AuthConfig {
    /// The configuration from the flags and the value of [`TOKENS_ENV`] (`None`, or
    /// empty: not set). `None` when authentication is off.
    pub fn from_sources(args: &AuthArgs, env_tokens: Option<&str>) -> anyhow::Result<Option<Self>> {
        let tokens = match env_tokens {
            None => Vec::new(),
            Some(text) if text.trim().is_empty() => Vec::new(),
            Some(text) => {
                let tokens = parse_list(text, ',');
                anyhow::ensure!(
                    !tokens.is_empty(),
                    "{TOKENS_ENV} is set but holds no token (only commas and blanks)"
                );
                tokens
            }
        };
        if args.auth_token_file.is_none() && tokens.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            token_file: args.auth_token_file.clone(),
            tokens,
        }))
    }

    /// [`Self::from_sources`] with [`TOKENS_ENV`] read from the process environment.
    pub fn from_env(args: &AuthArgs) -> anyhow::Result<Option<Self>> {
        let env = match std::env::var(TOKENS_ENV) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("{TOKENS_ENV} is not valid UTF-8")
            }
        };
        Self::from_sources(args, env.as_deref())
    }

    /// Every accepted credential now: the fixed ones, then the file's. Errors when the
    /// file cannot be read or when there is no credential at all (an enabled check that
    /// accepts nothing is a configuration mistake, not an open endpoint).
    pub fn load(&self) -> anyhow::Result<Vec<String>> {
        let mut credentials = self.tokens.clone();
        if let Some(path) = &self.token_file {
            credentials.extend(read_token_file(path)?);
        }
        anyhow::ensure!(
            !credentials.is_empty(),
            "authentication is on but no credential is configured ({} is empty)",
            self.token_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| TOKENS_ENV.to_string())
        );
        Ok(credentials)
    }
}

/// Non-empty, trimmed entries of `text` split at `separator`.
fn parse_list(text: &str, separator: char) -> Vec<String> {
    text.split(separator)
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_string)
        .collect()
}

/// The credentials of a token file (one per line).
pub fn read_token_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    Ok(parse_list(&text, '\n'))
}

type Digest = [u8; 32];

fn digest(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Equality of two digests in time independent of where they differ.
fn digest_eq(a: &Digest, b: &Digest) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        difference |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(difference) == 0
}

/// Digests of the accepted credentials.
#[derive(Clone, Default)]
pub struct CredentialSet {
    digests: Vec<Digest>,
}

impl std::fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialSet({} credentials)", self.digests.len())
    }
}

impl CredentialSet {
    /// The set accepting exactly `credentials` (tokens or `user:password`).
    pub fn new<S: AsRef<str>>(credentials: impl IntoIterator<Item = S>) -> Self {
        let mut digests: Vec<Digest> = credentials
            .into_iter()
            .map(|c| digest(c.as_ref().as_bytes()))
            .collect();
        digests.sort_unstable();
        digests.dedup();
        Self { digests }
    }

    /// How many distinct credentials are accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether nothing is accepted.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether the decoded header value `raw` is accepted. Every entry is compared, so
    /// the time taken does not depend on which one (if any) matches.
    pub fn accepts(&self, raw: &[u8]) -> bool {
        let presented = digest(raw);
        let mut found = false;
        for accepted in &self.digests {
            found |= digest_eq(&presented, accepted);
        }
        found
    }
}

/// Why a request was refused; the messages are Milvus's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization` header.
    Missing,
    /// The header is not base64.
    InvalidFormat,
    /// A token (no `:`) that is not accepted.
    WrongApiKey,
    /// A `user:password` that is not accepted.
    WrongUserPassword,
}

impl AuthFailure {
    /// Milvus's message for this failure.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing authorization in header",
            AuthFailure::InvalidFormat => "invalid token format",
            AuthFailure::WrongApiKey => "auth check failure, please check api key is correct",
            AuthFailure::WrongUserPassword => {
                "auth check failure, please check username and password are correct"
            }
        }
    }

    /// The gRPC status Milvus answers: `UNAUTHENTICATED` with [`Self::message`].
    pub fn to_status(self) -> Status {
        Status::unauthenticated(self.message())
    }
}

/// Base64 as Go's `base64.StdEncoding.DecodeString` (Milvus `crypto.Base64Decode`):
/// standard alphabet, padding required, non-zero trailing bits tolerated.
const GO_STD_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

/// Decodes an `authorization` header value (`None`: the header is absent) into the raw
/// credential bytes.
pub fn decode_header(value: Option<&[u8]>) -> Result<Vec<u8>, AuthFailure> {
    let value = value.ok_or(AuthFailure::Missing)?;
    GO_STD_BASE64
        .decode(value)
        .map_err(|_| AuthFailure::InvalidFormat)
}

/// Checks one header value against `accepted`, in Milvus's order.
pub fn check(accepted: &CredentialSet, header: Option<&[u8]>) -> Result<(), AuthFailure> {
    let raw = decode_header(header)?;
    if accepted.accepts(&raw) {
        return Ok(());
    }
    if raw.contains(&b':') {
        Err(AuthFailure::WrongUserPassword)
    } else {
        Err(AuthFailure::WrongApiKey)
    }
}

/// The credentials currently accepted, shared with the reload task.
#[derive(Clone, Debug)]
pub struct Authenticator {
    accepted: Arc<RwLock<Arc<CredentialSet>>>,
}

impl Authenticator {
    /// Accepts exactly `credentials`.
    pub fn new<S: AsRef<str>>(credentials: impl IntoIterator<Item = S>) -> Self {
        Self {
            accepted: Arc::new(RwLock::new(Arc::new(CredentialSet::new(credentials)))),
        }
    }

    /// Loads `config` (errors when nothing is accepted).
    pub fn load(config: &AuthConfig) -> anyhow::Result<Self> {
        Ok(Self::new(config.load()?))
    }

    /// How many distinct credentials are accepted now.
    pub fn len(&self) -> usize {
        self.accepted.read().len()
    }

    /// Whether nothing is accepted (never the case after [`Self::load`]).
    pub fn is_empty(&self) -> bool {
        self.accepted.read().is_empty()
    }

    /// Replaces the accepted credentials.
    pub fn replace(&self, set: CredentialSet) {
        *self.accepted.write() = Arc::new(set);
    }

    /// Checks a request's `authorization` header.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), AuthFailure> {
        let header = request.metadata().get(HEADER).map(|value| value.as_bytes());
        let accepted = self.accepted.read().clone();
        check(&accepted, header)
    }

    /// Re-reads `config` every `interval` and swaps the new set in when it differs. A
    /// file that cannot be read or holds no credential keeps the previous set (never an
    /// open endpoint; warned once until it is usable again). Stops once the
    /// authenticator is dropped everywhere else.
    pub fn spawn_reload(&self, config: AuthConfig, interval: Duration) {
        let Some(path) = config.token_file.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.accepted);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut failing = false;
            loop {
                ticker.tick().await;
                if weak.strong_count() == 0 {
                    return;
                }
                let loaded = {
                    let config = config.clone();
                    tokio::task::spawn_blocking(move || config.load()).await
                };
                let credentials = match loaded {
                    Ok(Ok(credentials)) => credentials,
                    Ok(Err(error)) => {
                        if !failing {
                            tracing::warn!(error = %format!("{error:#}"), "token file not usable; keeping the accepted credentials");
                        }
                        failing = true;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "token file reload task failed");
                        continue;
                    }
                };
                failing = false;
                let set = CredentialSet::new(&credentials);
                let Some(accepted) = weak.upgrade() else {
                    return;
                };
                if accepted.read().digests == set.digests {
                    continue;
                }
                tracing::info!(file = %path.display(), credentials = set.len(), "token file changed: accepted credentials reloaded");
                *accepted.write() = Arc::new(set);
            }
        });
    }
}

/// The tonic interceptor in front of every RPC: with no authenticator, every request
/// passes.
#[derive(Clone, Debug, Default)]
pub struct AuthInterceptor {
    authenticator: Option<Authenticator>,
    also: Option<Authenticator>,
}

impl AuthInterceptor {
    /// Checks requests with `authenticator` (`None`: authentication off).
    pub fn new(authenticator: Option<Authenticator>) -> Self {
        Self {
            authenticator,
            also: None,
        }
    }

    /// Also accepts what `other` accepts (when the check is on at all).
    pub fn or(self, other: Option<Authenticator>) -> Self {
        Self {
            also: other,
            ..self
        }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(authenticator) = &self.authenticator
            && let Err(failure) = authenticator.check(&request)
            && self
                .also
                .as_ref()
                .is_none_or(|also| also.check(&request).is_err())
        {
            tracing::debug!(
                reason = failure.message(),
                "request rejected: not authenticated"
            );
            return Err(failure.to_status());
        }
        Ok(request)
    }
}

/// A credential this process presents on its own calls: the `authorization` header value
/// (base64 of the token, as pymilvus sends it). Its Debug output hides it.
#[derive(Clone)]
pub struct Credential {
    header: tonic::metadata::AsciiMetadataValue,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(***)")
    }
}

impl Credential {
    /// The credential `raw` (a token or `user:password`).
    pub fn new(raw: &str) -> anyhow::Result<Self> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let header = encoded
            .parse()
            .map_err(|_| anyhow::anyhow!("a credential does not make a valid header value"))?;
        Ok(Self { header })
    }

    /// The first credential `config` accepts: what a process presents when the same
    /// credentials are used in both directions.
    pub fn first_of(config: &AuthConfig) -> anyhow::Result<Self> {
        let credentials = config.load()?;
        let first = credentials
            .first()
            .context("authentication is on but no credential is configured")?;
        Self::new(first)
    }

    /// Puts the credential into `metadata`.
    pub fn attach(&self, metadata: &mut tonic::metadata::MetadataMap) {
        metadata.insert(HEADER, self.header.clone());
    }
}

/// A client interceptor that adds a credential (when there is one) to every call.
#[derive(Clone, Debug, Default)]
pub struct Present(pub Option<Credential>);

impl tonic::service::Interceptor for Present {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(credential) = &self.0 {
            credential.attach(request.metadata_mut());
        }
        Ok(request)
    }
}

/// Both sides of an authenticated internal plane (a streaming node and the coordinator's
/// streaming endpoints): the credentials accepted from the other side, and the one
/// presented to it.
#[derive(Clone, Debug)]
pub struct PlaneAuth {
    /// Checked on every call this side serves.
    pub accept: Authenticator,
    /// Sent on every call this side makes.
    pub present: Credential,
}

impl PlaneAuth {
    /// Accepts every credential of `config` and presents its first. Call inside a Tokio
    /// runtime: a token file is re-read when it changes.
    pub fn load(config: &AuthConfig) -> anyhow::Result<Self> {
        let accept = Authenticator::load(config)?;
        accept.spawn_reload(config.clone(), RELOAD_INTERVAL);
        Ok(Self {
            accept,
            present: Credential::first_of(config)?,
        })
    }

    /// A fresh random credential known only to this process (256 bits from the OS), for a
    /// plane whose both ends live in one process (`up`).
    pub fn generate() -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self {
            accept: Authenticator::new([token.as_str()]),
            present: Credential::new(&token)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(text)
            .into_bytes()
    }

    fn set() -> CredentialSet {
        CredentialSet::new(["s3cret-token", "root:Milvus"])
    }

    #[test]
    fn accepts_token_and_user_password() {
        assert_eq!(check(&set(), Some(&b64("s3cret-token"))), Ok(()));
        assert_eq!(check(&set(), Some(&b64("root:Milvus"))), Ok(()));
    }

    #[test]
    fn missing_header() {
        assert_eq!(check(&set(), None), Err(AuthFailure::Missing));
        assert_eq!(
            AuthFailure::Missing.to_status().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            AuthFailure::Missing.to_status().message(),
            "missing authorization in header"
        );
    }

    #[test]
    fn not_base64_is_invalid_format() {
        for value in [
            &b"%%%notbase64"[..],
            b"Bearer czNjcmV0LXRva2Vu",
            b"czNjcmV0LXRva2Vu=", // bad padding
            b"czNjcmV0LXRva2V",   // missing padding
        ] {
            assert_eq!(
                check(&set(), Some(value)),
                Err(AuthFailure::InvalidFormat),
                "{value:?}"
            );
        }
    }

    #[test]
    fn wrong_credentials_pick_milvus_message_by_colon() {
        assert_eq!(
            check(&set(), Some(&b64("other"))),
            Err(AuthFailure::WrongApiKey)
        );
        // The empty value decodes to an empty API key (measured on 2.3.5).
        assert_eq!(check(&set(), Some(b"")), Err(AuthFailure::WrongApiKey));
        assert_eq!(
            check(&set(), Some(&b64("root:wrong"))),
            Err(AuthFailure::WrongUserPassword)
        );
        // A token-style entry is not accepted as a user name or a prefix.
        assert_eq!(
            check(&set(), Some(&b64("s3cret-token:"))),
            Err(AuthFailure::WrongUserPassword)
        );
        assert_eq!(
            check(&set(), Some(&b64("s3cret-toke"))),
            Err(AuthFailure::WrongApiKey)
        );
        assert_eq!(
            AuthFailure::WrongUserPassword.message(),
            "auth check failure, please check username and password are correct"
        );
        assert_eq!(
            AuthFailure::WrongApiKey.message(),
            "auth check failure, please check api key is correct"
        );
    }

    #[test]
    fn non_canonical_trailing_bits_are_tolerated_like_go() {
        // "YQ==" is "a"; "YR==" has non-zero trailing bits, which Go's StdEncoding accepts.
        let accepted = CredentialSet::new(["a"]);
        assert_eq!(check(&accepted, Some(b"YQ==")), Ok(()));
        assert_eq!(check(&accepted, Some(b"YR==")), Ok(()));
    }

    #[test]
    fn parsing_of_file_and_env_lists() {
        assert_eq!(
            parse_list("  a \r\n\n root:pw\r\n# not a comment\n", '\n'),
            vec!["a", "root:pw", "# not a comment"]
        );
        assert_eq!(parse_list(" a, b ,,c", ','), vec!["a", "b", "c"]);
    }

    #[test]
    fn config_sources() {
        let none = AuthArgs::default();
        assert_eq!(AuthConfig::from_sources(&none, None).ok(), Some(None));
        assert_eq!(AuthConfig::from_sources(&none, Some("  ")).ok(), Some(None));
        assert!(AuthConfig::from_sources(&none, Some(" , ")).is_err());
        let config = AuthConfig::from_sources(&none, Some("t1, user:pw"))
            .ok()
            .flatten()
            .expect("enabled");
        assert_eq!(config.tokens, vec!["t1", "user:pw"]);
        let debug = format!("{config:?}");
        assert!(!debug.contains("t1") && !debug.contains("pw"), "{debug}");
    }

    #[test]
    fn token_file_loads_and_empty_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "one\nalice:pw\n\n").expect("write");
        let args = AuthArgs {
            auth_token_file: Some(path.clone()),
        };
        let config = AuthConfig::from_sources(&args, Some("env-token"))
            .ok()
            .flatten()
            .expect("enabled");
        let authenticator = Authenticator::load(&config).expect("loads");
        assert_eq!(authenticator.len(), 3);
        std::fs::write(&path, "\n  \n").expect("write");
        let only_file = AuthConfig::from_sources(&args, None)
            .ok()
            .flatten()
            .expect("enabled");
        let error = only_file.load().expect_err("nothing accepted");
        assert!(format!("{error:#}").contains("no credential"), "{error:#}");
        let missing = AuthConfig {
            token_file: Some(dir.path().join("absent")),
            tokens: Vec::new(),
        };
        assert!(missing.load().is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let set = CredentialSet::new(["hunter2"]);
        assert_eq!(format!("{set:?}"), "CredentialSet(1 credentials)");
    }

    #[test]
    fn interceptor_passes_everything_when_off() {
        use tonic::service::Interceptor as _;
        let mut off = AuthInterceptor::new(None);
        assert!(off.call(Request::new(())).is_ok());
        let mut on = AuthInterceptor::new(Some(Authenticator::new(["t"])));
        let status = on.call(Request::new(())).expect_err("missing header");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(HEADER, "dA==".parse().expect("ascii"));
        assert!(on.call(request).is_ok());
        // "or": either set is accepted, nothing else.
        let mut either = AuthInterceptor::new(Some(Authenticator::new(["t"])))
            .or(Some(Authenticator::new(["u"])));
        for (token, accepted) in [("dA==", true), ("dQ==", true), ("dg==", false)] {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert(HEADER, token.parse().expect("ascii"));
            assert_eq!(either.call(request).is_ok(), accepted, "{token}");
        }
    }

    #[tokio::test]
    async fn reload_swaps_in_changed_file_and_keeps_set_on_bad_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "old\n").expect("write");
        let config = AuthConfig {
            token_file: Some(path.clone()),
            tokens: Vec::new(),
        };
        let authenticator = Authenticator::load(&config).expect("loads");
        authenticator.spawn_reload(config, Duration::from_millis(20));
        let accepts = |token: &str| {
            let mut request = Request::new(());
            let value = base64::engine::general_purpose::STANDARD.encode(token);
            request
                .metadata_mut()
                .insert(HEADER, value.parse().expect("ascii"));
            authenticator.check(&request).is_ok()
        };
        assert!(accepts("old"));
        std::fs::write(&path, "new\n").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !accepts("new") {
            assert!(std::time::Instant::now() < deadline, "reload not seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!accepts("old"));
        // An emptied file keeps the previous set.
        std::fs::write(&path, "").expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(accepts("new"));
    }

    #[test]
    fn presented_credential_is_accepted_and_hidden() {
        use tonic::service::Interceptor as _;
        let plane = PlaneAuth::generate().expect("random");
        let other = PlaneAuth::generate().expect("random");
        let mut request = Present(Some(plane.present.clone()))
            .call(Request::new(()))
            .expect("adds");
        assert!(plane.accept.check(&request).is_ok());
        assert_eq!(
            other.accept.check(&request),
            Err(AuthFailure::WrongApiKey),
            "two generated credentials differ"
        );
        request.metadata_mut().remove(HEADER);
        assert_eq!(plane.accept.check(&request), Err(AuthFailure::Missing));
        assert_eq!(format!("{:?}", plane.present), "Credential(***)");
    }
}
