//! `Coordinator`: where the engine is — either `external` (an existing Milvus, or our
//! coordinator run elsewhere) or `managed` (the operator deploys our coordinator as a
//! StatefulSet, and the StreamingNode StatefulSet its WAL placement asks for).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Secret (same namespace) holding the engine credentials: either `token`, or `username`
/// and `password` — what pymilvus sends as the `authorization` header. The operator uses it
/// only when it carries the label `collections.dev/credentials: "true"`, and never a Secret
/// of type `kubernetes.io/service-account-token`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An engine the operator does not deploy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCoordinator {
    /// gRPC endpoint, e.g. `http://milvus.vector:19530`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("endpoint must start with http:// or https://"))]
    #[schemars(length(min = 8, max = 2048))]
    pub endpoint: String,
    /// Credentials, if the engine requires them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsSecretRef>,
}

/// Where a managed coordinator keeps its metadata.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ManagedMetaStore {
    /// The embedded redb file on a PersistentVolumeClaim per replica (one replica only).
    Redb(RedbStorage),
    /// An etcd cluster the operator does not deploy; allows `replicas > 1` (one leader,
    /// followers serving reads).
    Etcd(EtcdStorage),
}

impl Default for ManagedMetaStore {
    fn default() -> Self {
        Self::Redb(RedbStorage::default())
    }
}

/// The PersistentVolumeClaim of the redb store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedbStorage {
    /// Requested size, e.g. `1Gi`.
    #[serde(default = "default_redb_size")]
    pub size: String,
    /// StorageClass; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for RedbStorage {
    fn default() -> Self {
        Self {
            size: default_redb_size(),
            storage_class_name: None,
        }
    }
}

fn default_redb_size() -> String {
    "1Gi".into()
}

/// The etcd the coordinator replicas share.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdStorage {
    /// Client endpoints, e.g. `http://etcd.storage:2379`.
    #[schemars(length(min = 1))]
    pub endpoints: Vec<String>,
    /// Key prefix; default `collection-operator/<namespace>/<name>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Where streaming nodes keep their segment logs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WalStorage {
    /// A ReadWriteMany PersistentVolumeClaim (created elsewhere) mounted by every node, so
    /// that a pchannel moved to another node continues the same log. The cluster default.
    SharedClaim(SharedClaim),
    /// A pod-local emptyDir: a pchannel moved to another node starts a new log there
    /// (acknowledged records of a lost node are gone). For trials only.
    EmptyDir {},
}

/// A ReadWriteMany claim shared by the streaming nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedClaim {
    /// Name of the PersistentVolumeClaim (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// CPU and memory of one container, as Kubernetes quantities (`cpu: 500m`,
/// `memory: 1Gi`). A map left unset keeps the operator's default for that container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResources {
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<std::collections::BTreeMap<String, String>>,
    /// The most the container may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<std::collections::BTreeMap<String, String>>,
}

/// WAL placement: how many pchannels, and how the StreamingNode StatefulSet is sized.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct StreamingSpec {
    /// Physical WAL channels (`--pchannels`); fixed once created.
    #[serde(default = "default_pchannels")]
    #[schemars(range(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("pchannels is immutable"))]
    pub pchannels: u32,
    /// Most pchannels one node should hold.
    #[serde(default = "default_max_per_node", rename = "maxPChannelsPerNode")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_pchannels_per_node: u32,
    /// Nodes beyond what the pchannels need, so that a lost node's channels have a home.
    #[serde(default = "default_spare")]
    #[schemars(range(min = 0, max = 16))]
    pub spare_nodes: u32,
    /// Fewest streaming nodes.
    #[serde(default = "default_min_nodes")]
    #[schemars(range(min = 1, max = 1024))]
    pub min_replicas: u32,
    /// Most streaming nodes.
    #[serde(default = "default_max_nodes")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_replicas: u32,
    /// Where segment logs live; default a pod-local emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_storage: Option<WalStorage>,
    /// Requests and limits of each streaming node container; default requests
    /// `cpu: 100m, memory: 128Mi`, limit `memory: 512Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
}

impl Default for StreamingSpec {
    fn default() -> Self {
        Self {
            pchannels: default_pchannels(),
            max_pchannels_per_node: default_max_per_node(),
            spare_nodes: default_spare(),
            min_replicas: default_min_nodes(),
            max_replicas: default_max_nodes(),
            wal_storage: None,
            resources: None,
        }
    }
}

fn default_pchannels() -> u32 {
    16
}
fn default_max_per_node() -> u32 {
    4
}
fn default_spare() -> u32 {
    1
}
fn default_min_nodes() -> u32 {
    1
}
fn default_max_nodes() -> u32 {
    16
}

/// A coordinator the operator deploys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.replicas <= 1 || has(self.metaStore) && has(self.metaStore.etcd)").message("replicas > 1 needs metaStore.etcd (the redb store is one replica's own disk)"))]
pub struct ManagedCoordinator {
    /// The `collection-operator` image (it holds every role); default the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Coordinator replicas (one leader; more need etcd).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 7))]
    pub replicas: u32,
    /// Where metadata lives; default redb on a 1Gi claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_store: Option<ManagedMetaStore>,
    /// WAL placement and streaming nodes.
    #[serde(default)]
    pub streaming: StreamingSpec,
    /// Credentials the coordinator requires (`token`, or `username`/`password`), also
    /// used by the operator itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsSecretRef>,
    /// Requests and limits of each coordinator container; default requests
    /// `cpu: 100m, memory: 256Mi`, limit `memory: 1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
}

fn default_replicas() -> u32 {
    1
}

/// Where Collections and CollectionAliases that reference this resource are applied.
// Several printer columns share `type_`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "collections.dev",
    version = "v1alpha1",
    kind = "Coordinator",
    namespaced,
    cel,
    status = "CoordinatorStatus",
    shortname = "coord",
    category = "collections",
    printcolumn(name = "ENDPOINT", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "VERSION", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external) != has(self.managed)").message("exactly one of spec.external and spec.managed must be set"))]
#[x_kube(validation = Rule::new("has(self.managed) == has(oldSelf.managed)").message("a Coordinator cannot switch between external and managed"))]
pub struct CoordinatorSpec {
    /// An existing engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCoordinator>,
    /// A coordinator (and its streaming nodes) the operator deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedCoordinator>,
}

/// Observed state of a `Coordinator`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the endpoint answers Connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The endpoint in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// What the engine reports as its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// WAL placement of a managed coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<StreamingStatus>,
}

/// Where each pchannel is, as the coordinator's `AssignmentDiscover` reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamingStatus {
    /// Version of the assignment this table was read at.
    #[serde(default)]
    pub assignment_version: i64,
    /// StreamingNode replicas the placement asks for.
    #[serde(default)]
    pub desired_replicas: u32,
    /// StreamingNode replicas the StatefulSet has now.
    #[serde(default)]
    pub replicas: u32,
    /// Every pchannel with its term and holder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pchannels: Vec<PChannelPlacement>,
    /// Every registered node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<StreamingNodePlacement>,
}

/// One row of the pchannel → term → pod table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PChannelPlacement {
    /// Pchannel name.
    pub name: String,
    /// Its current term.
    pub term: i64,
    /// Pod holding it; unset while it is being (re)assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// A streaming node as the placement sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamingNodePlacement {
    /// Its pod (from its stable address), or the address when it is not one of ours.
    pub pod: String,
    /// Server ID the coordinator gave it (never reused).
    pub server_id: i64,
    /// Frozen: gets no new pchannels and is being drained.
    #[serde(default)]
    pub frozen: bool,
    /// Pchannels it holds.
    #[serde(default)]
    pub pchannels: u32,
}

/// gRPC port of the coordinator (Milvus's).
pub const COORDINATOR_PORT: u16 = 19530;

impl Coordinator {
    /// Name of the Service clients of a managed coordinator use (also the StatefulSet's).
    pub fn managed_service_name(&self) -> String {
        format!("{}-coordinator", kube::ResourceExt::name_any(self))
    }

    /// The engine endpoint: the external one, or the in-cluster Service of a managed
    /// coordinator (`http://<name>-coordinator.<namespace>.svc:19530`, unless the
    /// `collections.dev/endpoint` annotation says otherwise). `None` for a spec with
    /// neither (refused by CEL) or a managed one without a namespace.
    pub fn endpoint(&self) -> Option<String> {
        if let Some(external) = &self.spec.external {
            return Some(external.endpoint.clone());
        }
        self.spec.managed.as_ref()?;
        if let Some(endpoint) = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::common::ENDPOINT_ANNOTATION))
        {
            return Some(endpoint.clone());
        }
        self.in_cluster_endpoint()
    }

    /// The in-cluster Service URL of a managed coordinator (what its streaming nodes use).
    pub fn in_cluster_endpoint(&self) -> Option<String> {
        let namespace = self.metadata.namespace.as_deref()?;
        Some(format!(
            "http://{}.{namespace}.svc:{COORDINATOR_PORT}",
            self.managed_service_name()
        ))
    }

    /// The Secret with the credentials the engine requires, if any.
    pub fn credentials_secret(&self) -> Option<&CredentialsSecretRef> {
        match (&self.spec.external, &self.spec.managed) {
            (Some(external), _) => external.credentials_secret.as_ref(),
            (None, Some(managed)) => managed.credentials_secret.as_ref(),
            (None, None) => None,
        }
    }
}
