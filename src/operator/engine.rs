//! Engine connections, one per `Coordinator`, shared by every object that references it.
//!
//! A connection is made on first use (reading the credentials Secret then) and reused
//! until the Coordinator's generation or endpoint changes, a call finds the engine
//! unreachable, or it is older than [`CONNECTION_TTL`] (so a rotated Secret is picked up
//! without watching Secrets, which would need cluster-wide read access to all of them).
//! Every call is timed into the RPC latency metric.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use parking_lot::Mutex;

use super::error::Error;
use super::events::is_rpc;
use super::metrics::Metrics;
use crate::client::{Applied, ClientError, Credentials, EngineClient};
use crate::crd::Coordinator;
use crate::plan::serving::{ServingAction, ServingObservation};
use crate::plan::{Action, Observed};

/// How long a connection (and the credentials read for it) is reused.
pub const CONNECTION_TTL: Duration = Duration::from_secs(300);

/// Secret key holding an API token.
pub const TOKEN_KEY: &str = "token";
/// Secret key holding the user name.
pub const USERNAME_KEY: &str = "username";
/// Secret key holding the password.
pub const PASSWORD_KEY: &str = "password";
/// Label a Secret must carry (value `"true"`) before the operator uses it as engine
/// credentials: whoever may create a `Coordinator` could otherwise name any Secret of the
/// namespace and have its content sent to an endpoint of their choosing.
pub const CREDENTIALS_OPT_IN_LABEL: &str = "collections.dev/credentials";
/// Secret type never used as credentials, opted in or not (a pod identity, not a password).
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    uid: Option<String>,
    generation: Option<i64>,
    endpoint: String,
    secret: Option<String>,
}

struct Cached {
    fingerprint: Fingerprint,
    client: EngineClient,
    since: Instant,
}

type CacheKey = (String, String);

/// The connection cache.
#[derive(Clone)]
pub struct Engines {
    client: Client,
    metrics: Arc<Metrics>,
    cache: Arc<Mutex<HashMap<CacheKey, Cached>>>,
    allowed_hosts: Arc<[String]>,
}

impl Engines {
    /// An empty cache; `client` reads credentials Secrets. `allowed_hosts` are host globs
    /// ([`host_allowed`]) an endpoint must match; empty allows any.
    pub fn new(client: Client, metrics: Arc<Metrics>, allowed_hosts: Vec<String>) -> Self {
        Self {
            client,
            metrics,
            cache: Arc::new(Mutex::new(HashMap::new())),
            allowed_hosts: allowed_hosts.into(),
        }
    }

    /// A connection to the engine `coordinator` describes.
    pub async fn connect(&self, coordinator: &Coordinator) -> Result<Engine, Error> {
        let namespace = coordinator
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let name = coordinator.name_any();
        let endpoint = coordinator.endpoint().ok_or_else(|| Error::Coordinator {
            namespace: namespace.clone(),
            name: name.clone(),
            message: "neither spec.external nor spec.managed is set".to_string(),
        })?;
        let fingerprint = Fingerprint {
            uid: coordinator.uid(),
            generation: coordinator.metadata.generation,
            endpoint,
            secret: coordinator.credentials_secret().map(|s| s.name.clone()),
        };
        let key = (namespace.clone(), name);
        if let Some(cached) = self.cache.lock().get(&key)
            && cached.fingerprint == fingerprint
            && cached.since.elapsed() < CONNECTION_TTL
        {
            return Ok(Engine {
                client: cached.client.clone(),
                metrics: self.metrics.clone(),
                cache: self.cache.clone(),
                key,
            });
        }
        // The in-cluster Service of a managed coordinator is the operator's own deployment;
        // every other endpoint (external, or the annotation override) was chosen by
        // whoever wrote the Coordinator and must be on the allow-list.
        let own_service = coordinator.spec.managed.is_some()
            && coordinator.in_cluster_endpoint().as_deref() == Some(fingerprint.endpoint.as_str());
        if !own_service {
            check_endpoint(&fingerprint.endpoint, &self.allowed_hosts)?;
        }
        let credentials = match &fingerprint.secret {
            Some(secret) => Some(read_credentials(&self.client, &namespace, secret).await?),
            None => None,
        };
        let started = Instant::now();
        let connected = EngineClient::connect(&fingerprint.endpoint, credentials.as_ref()).await;
        self.metrics
            .rpc("Connect", connected.is_ok(), started.elapsed());
        let client = connected?;
        self.cache.lock().insert(
            key.clone(),
            Cached {
                fingerprint,
                client: client.clone(),
                since: Instant::now(),
            },
        );
        Ok(Engine {
            client,
            metrics: self.metrics.clone(),
            cache: self.cache.clone(),
            key,
        })
    }

    /// Drops the cached connection of a Coordinator (after it was deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.cache
            .lock()
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

/// Host part of an `http(s)://host[:port][/path]` endpoint, lower-cased (`None` when it
/// has none).
pub fn endpoint_host(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether `host` matches one of `globs` (`*` stands for any run of characters, matching
/// is case-insensitive); an empty list allows every host.
pub fn host_allowed(host: &str, globs: &[String]) -> bool {
    globs.is_empty()
        || globs
            .iter()
            .any(|glob| glob_match(&glob.to_ascii_lowercase(), &host.to_ascii_lowercase()))
}

fn glob_match(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut middle = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match middle.find(part) {
            Some(at) => middle = &middle[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Refuses an endpoint whose host is not on the operator's allow-list.
pub fn check_endpoint(endpoint: &str, allowed_hosts: &[String]) -> Result<(), Error> {
    if allowed_hosts.is_empty() {
        return Ok(());
    }
    let refused = |message: String| Error::EndpointRefused {
        endpoint: endpoint.to_string(),
        message,
    };
    let host = endpoint_host(endpoint).ok_or_else(|| refused("it names no host".into()))?;
    if host_allowed(&host, allowed_hosts) {
        Ok(())
    } else {
        Err(refused(format!(
            "host {host:?} is not in the operator's --allowed-endpoint-hosts {allowed_hosts:?}"
        )))
    }
}

/// Why a Secret may not be used as credentials, whatever it holds: it is a service-account
/// token, or it does not carry [`CREDENTIALS_OPT_IN_LABEL`]` = "true"`.
pub fn credentials_refusal(secret: &Secret) -> Option<String> {
    if secret.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN_TYPE) {
        return Some(format!(
            "Secrets of type {SERVICE_ACCOUNT_TOKEN_TYPE} are never used as engine credentials"
        ));
    }
    let opted_in = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(CREDENTIALS_OPT_IN_LABEL))
        .is_some_and(|value| value == "true");
    (!opted_in).then(|| {
        format!(
            "it lacks the label {CREDENTIALS_OPT_IN_LABEL}=\"true\" that allows the operator to \
             send it to the Coordinator's endpoint"
        )
    })
}

/// Reads engine credentials from a Secret: `token`, or `username` and `password`, only
/// when [`credentials_refusal`] finds nothing against it. Error messages name the keys,
/// never the values.
pub async fn read_credentials(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Credentials, Error> {
    let problem = |message: &str| Error::Credentials {
        namespace: namespace.to_string(),
        name: name.to_string(),
        message: message.to_string(),
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| Error::kube(format!("reading Secret {namespace}/{name}"), source))?
        .ok_or_else(|| problem("not found"))?;
    if let Some(message) = credentials_refusal(&secret) {
        return Err(Error::CredentialsRefused {
            namespace: namespace.to_string(),
            name: name.to_string(),
            message,
        });
    }
    credentials_from_secret(&secret).map_err(|message| problem(&message))
}

/// The credentials a Secret holds (pure part of [`read_credentials`]).
pub fn credentials_from_secret(secret: &Secret) -> Result<Credentials, String> {
    let value = |key: &str| -> Result<Option<String>, String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| bytes.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|data| data.get(key))
                    .map(|text| text.clone().into_bytes())
            });
        match bytes {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(|text| Some(text.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|_| format!("key {key:?} is not UTF-8 text")),
        }
    };
    if let Some(token) = value(TOKEN_KEY)?.filter(|t| !t.is_empty()) {
        return Ok(Credentials::Token(token));
    }
    match (value(USERNAME_KEY)?, value(PASSWORD_KEY)?) {
        (Some(user), Some(password)) if !user.is_empty() => {
            Ok(Credentials::UserPassword(user, password))
        }
        _ => Err(format!(
            "needs key {TOKEN_KEY:?}, or keys {USERNAME_KEY:?} and {PASSWORD_KEY:?}"
        )),
    }
}

/// One connection in use, timing its calls. A clone shares the connection (HTTP/2
/// multiplexes), so independent reads of one pass can run at once.
#[derive(Clone)]
pub struct Engine {
    client: EngineClient,
    metrics: Arc<Metrics>,
    cache: Arc<Mutex<HashMap<CacheKey, Cached>>>,
    key: CacheKey,
}

impl Engine {
    fn after<T>(&self, method: &str, started: Instant, result: &Result<T, ClientError>) {
        self.metrics.rpc(method, result.is_ok(), started.elapsed());
        match result {
            // Reconnect next time: the channel may be stuck on a dead address, or on a
            // coordinator replica that is not the leader (code 1, `service not ready`): a
            // new connection through a Service may reach the leader.
            Err(ClientError::Unreachable { .. })
            | Err(ClientError::Engine {
                code: crate::meta::error::code::SERVICE_NOT_READY,
                ..
            }) => {
                self.cache.lock().remove(&self.key);
            }
            _ => {}
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// [`EngineClient::observe`], timed as `Observe`.
    pub async fn observe(
        &mut self,
        collections: &BTreeSet<(String, String)>,
        aliases: &BTreeSet<(String, String)>,
    ) -> Result<Observed, ClientError> {
        let started = Instant::now();
        let result = self.client.observe(collections, aliases).await;
        self.after("Observe", started, &result);
        result
    }

    /// [`EngineClient::apply`], timed under the action's RPC name.
    pub async fn apply(&mut self, action: &Action) -> Result<Applied, ClientError> {
        let started = Instant::now();
        let result = self.client.apply(action).await;
        if is_rpc(action) {
            self.after(action.rpc_name(), started, &result);
        }
        result
    }

    /// [`EngineClient::wal_placement`], timed as `AssignmentDiscover`. A refusal by a
    /// follower replica drops the cached connection, so the next pass reconnects (and,
    /// behind a Service, may reach the leader).
    pub async fn wal_placement(&mut self) -> Result<crate::client::WalPlacement, ClientError> {
        let started = Instant::now();
        let result = self.client.wal_placement().await;
        self.after("AssignmentDiscover", started, &result);
        result
    }

    /// [`EngineClient::update_wal_freeze`], timed as `UpdateWALBalancePolicy`.
    pub async fn update_wal_freeze(
        &mut self,
        freeze: &[i64],
        defreeze: &[i64],
    ) -> Result<(), ClientError> {
        let started = Instant::now();
        let result = self.client.update_wal_freeze(freeze, defreeze).await;
        self.after("UpdateWALBalancePolicy", started, &result);
        result
    }

    /// [`EngineClient::serving`] (indexes, load state, row count), timed as `Serving`.
    pub async fn serving(
        &mut self,
        database: &str,
        collection: &str,
    ) -> Result<ServingObservation, ClientError> {
        let started = Instant::now();
        let result = self.client.serving(database, collection).await;
        self.after("Serving", started, &result);
        result
    }

    /// [`EngineClient::apply_serving`], timed under the call's RPC name.
    pub async fn apply_serving(
        &mut self,
        database: &str,
        collection: &str,
        action: &ServingAction,
    ) -> Result<(), ClientError> {
        let started = Instant::now();
        let result = self
            .client
            .apply_serving(database, collection, action)
            .await;
        self.after(serving_action_name(action), started, &result);
        result
    }

    /// [`EngineClient::alias_target`], timed as `DescribeAlias`.
    pub async fn alias_target(
        &mut self,
        database: &str,
        alias: &str,
    ) -> Result<Option<String>, ClientError> {
        let started = Instant::now();
        let result = self.client.alias_target(database, alias).await;
        self.after("DescribeAlias", started, &result);
        result
    }

    /// [`EngineClient::resolve`], timed as `DescribeCollection`.
    pub async fn resolve(
        &mut self,
        database: &str,
        name_or_alias: &str,
    ) -> Result<Option<(String, i64)>, ClientError> {
        let started = Instant::now();
        let result = self.client.resolve(database, name_or_alias).await;
        self.after("DescribeCollection", started, &result);
        result
    }

    /// [`EngineClient::server_version`], timed as `GetVersion`.
    pub async fn server_version(&mut self) -> Result<String, ClientError> {
        let started = Instant::now();
        let result = self.client.server_version().await;
        self.after("GetVersion", started, &result);
        result
    }
}

/// The RPC a serving call makes.
pub fn serving_action_name(action: &ServingAction) -> &'static str {
    match action {
        ServingAction::CreateIndex(_) => "CreateIndex",
        ServingAction::LoadCollection { .. } => "LoadCollection",
        ServingAction::ReleaseCollection => "ReleaseCollection",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(type_: Option<&str>, labels: &[(&str, &str)]) -> Secret {
        let mut secret = Secret {
            type_: type_.map(str::to_string),
            ..Default::default()
        };
        secret.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        secret
    }

    #[test]
    fn only_opted_in_secrets_that_are_not_service_account_tokens_are_used() {
        let opted_in = [(CREDENTIALS_OPT_IN_LABEL, "true")];
        assert_eq!(credentials_refusal(&secret(None, &opted_in)), None);
        assert_eq!(
            credentials_refusal(&secret(Some("kubernetes.io/basic-auth"), &opted_in)),
            None
        );
        let missing = credentials_refusal(&secret(Some("Opaque"), &[])).expect("refused");
        assert!(
            missing.contains("collections.dev/credentials=\"true\""),
            "{missing}"
        );
        let wrong_value = [(CREDENTIALS_OPT_IN_LABEL, "yes")];
        assert!(credentials_refusal(&secret(None, &wrong_value)).is_some());
        let token = credentials_refusal(&secret(Some(SERVICE_ACCOUNT_TOKEN_TYPE), &opted_in))
            .expect("a service-account token is never used");
        assert!(token.contains(SERVICE_ACCOUNT_TOKEN_TYPE), "{token}");
    }

    #[test]
    fn endpoint_hosts_and_globs() {
        assert_eq!(
            endpoint_host("http://Milvus.vector:19530").as_deref(),
            Some("milvus.vector")
        );
        assert_eq!(
            endpoint_host("https://user@db.example.com/path").as_deref(),
            Some("db.example.com")
        );
        assert_eq!(endpoint_host("http://[::1]:19530").as_deref(), Some("::1"));
        assert_eq!(endpoint_host("http://:19530"), None);
        let globs = vec!["*.svc".to_string(), "milvus.example.com".to_string()];
        assert!(host_allowed("engine-coordinator.search.svc", &globs));
        assert!(host_allowed("MILVUS.example.com", &globs));
        assert!(!host_allowed("attacker.example.net", &globs));
        assert!(!host_allowed("svc", &globs), "the glob needs the dot");
        assert!(!host_allowed("milvus.example.com.evil.net", &globs));
        assert!(host_allowed("a.b.c", &["a*c".to_string()]));
        assert!(host_allowed("anything", &[]), "empty list: any host");
        assert!(check_endpoint("http://127.0.0.1:19530", &[]).is_ok());
        let refused = check_endpoint("http://127.0.0.1:19530", &globs).expect_err("refused");
        assert!(
            matches!(&refused, Error::EndpointRefused { .. })
                && refused.to_string().contains("127.0.0.1"),
            "{refused}"
        );
    }
}
