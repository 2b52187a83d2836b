//! The Kubernetes objects a managed `Coordinator` consists of (see [`super`] for the
//! list): pure builders from the spec, applied by the controller with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, GRPCAction, KeyToPath, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::coordinator::COORDINATOR_PORT;
use crate::crd::{
    ContainerResources, Coordinator, ManagedCoordinator, ManagedMetaStore, WalStorage,
};

/// gRPC port of a streaming node.
pub const STREAMING_PORT: u16 = 22222;

/// Where a streaming node finds the credential of its Coordinator's `credentialsSecret`.
const CREDENTIALS_DIR: &str = "/var/run/collection-operator/credentials";
/// Where the coordinator keeps redb inside its pod.
pub const DATA_DIR: &str = "/var/lib/collection-operator";
/// Where streaming nodes keep segment logs inside their pods.
pub const WAL_DIR: &str = "/var/lib/collection-operator-wal";
/// Pod template annotation holding the hash of the ConfigMap's data.
pub const CONFIG_HASH_ANNOTATION: &str = "collections.dev/config-hash";

/// Names of everything a managed Coordinator `name` owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedNames {
    /// Coordinator StatefulSet, client Service and ConfigMap.
    pub coordinator: String,
    /// Governing (headless) Service of the coordinator StatefulSet.
    pub coordinator_headless: String,
    /// StreamingNode StatefulSet and its headless Service.
    pub streaming: String,
    /// ServiceAccount of the coordinator and streaming node pods (no API token mounted).
    pub service_account: String,
}

impl ManagedNames {
    /// The names for Coordinator `name`.
    pub fn of(name: &str) -> Self {
        Self {
            coordinator: format!("{name}-coordinator"),
            coordinator_headless: format!("{name}-coordinator-headless"),
            streaming: format!("{name}-streamingnode"),
            service_account: format!("{name}-managed"),
        }
    }
}

/// Every object of a managed Coordinator, as it should be.
#[derive(Debug, Clone)]
pub struct ManagedObjects {
    /// Settings of the coordinator.
    pub config_map: ConfigMap,
    /// Client Service (19530).
    pub coordinator_service: Service,
    /// Headless Service of the coordinator StatefulSet.
    pub coordinator_headless: Service,
    /// The coordinator StatefulSet.
    pub coordinator: StatefulSet,
    /// PDB of the coordinators, when there are several.
    pub coordinator_pdb: Option<PodDisruptionBudget>,
    /// Headless Service of the streaming nodes (their stable addresses).
    pub streaming_service: Service,
    /// The StreamingNode StatefulSet.
    pub streaming: StatefulSet,
    /// PDB of the streaming nodes.
    pub streaming_pdb: PodDisruptionBudget,
    /// Identity of both kinds of pods: its own, so that they never run with the
    /// namespace's `default` account (and whatever RBAC that one was given).
    pub service_account: ServiceAccount,
    /// Only the coordinator pods of this instance reach the streaming node port.
    pub streaming_network_policy: NetworkPolicy,
}

/// Why the objects cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidManagedSpec(pub String);

fn labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "collection-operator".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "collection-operator".to_string(),
        ),
    ])
}

fn selector(instance: &str, component: &str) -> BTreeMap<String, String> {
    labels(instance, component)
        .into_iter()
        .filter(|(key, _)| key != "app.kubernetes.io/managed-by")
        .collect()
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `grpc.health.v1` probe of `service` on `port`. The servers answer from their own state
/// (the coordinator from `CheckHealth`, a streaming node from its session with the
/// coordinator), so a probe fails when the server cannot do its job, not only when the
/// port is closed.
fn grpc_probe(port: u16, service: &str, period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: port.into(),
            service: (!service.is_empty()).then(|| service.to_string()),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Requests and limits a container gets when its spec names none.
#[derive(Debug, Clone, Copy)]
pub struct DefaultResources {
    /// (resource, quantity) reserved.
    pub requests: &'static [(&'static str, &'static str)],
    /// (resource, quantity) at most.
    pub limits: &'static [(&'static str, &'static str)],
}

/// Default requests and limits of the coordinator container.
pub const COORDINATOR_RESOURCES: DefaultResources = DefaultResources {
    requests: &[("cpu", "100m"), ("memory", "256Mi")],
    limits: &[("memory", "1Gi")],
};
/// Default requests and limits of a streaming node container.
pub const STREAMING_RESOURCES: DefaultResources = DefaultResources {
    requests: &[("cpu", "100m"), ("memory", "128Mi")],
    limits: &[("memory", "512Mi")],
};

/// The container resources of `spec`, each of requests and limits falling back to
/// `defaults` when the spec leaves it unset. No CPU limit by default: throttling a
/// coordinator stalls every client, while memory must be bounded.
fn resources(
    spec: Option<&ContainerResources>,
    defaults: &DefaultResources,
) -> ResourceRequirements {
    let quantities = |given: Option<&BTreeMap<String, String>>, fallback: &[(&str, &str)]| {
        let map: BTreeMap<String, Quantity> = match given {
            Some(given) => given
                .iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect(),
            None => fallback
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        };
        (!map.is_empty()).then_some(map)
    };
    ResourceRequirements {
        requests: quantities(spec.and_then(|s| s.requests.as_ref()), defaults.requests),
        limits: quantities(spec.and_then(|s| s.limits.as_ref()), defaults.limits),
        ..Default::default()
    }
}

/// Refuses quantities Kubernetes would reject, so that the spec is reported on the
/// Coordinator instead of failing the apply.
fn check_resources(
    what: &str,
    spec: Option<&ContainerResources>,
) -> Result<(), InvalidManagedSpec> {
    let Some(spec) = spec else { return Ok(()) };
    for (kind, map) in [("requests", &spec.requests), ("limits", &spec.limits)] {
        for (name, value) in map.iter().flatten() {
            let plausible = !value.is_empty()
                && value.len() <= 64
                && value.starts_with(|c: char| c.is_ascii_digit() || c == '.')
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
            if !plausible {
                return Err(InvalidManagedSpec(format!(
                    "{what}.resources.{kind}.{name}: {value:?} is not a Kubernetes quantity"
                )));
            }
        }
    }
    Ok(())
}

/// The same hardening as the operator's own pod (the chart's defaults).
fn hardened() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        fs_group: Some(65532),
        ..Default::default()
    }
}

/// FNV-1a of the ConfigMap data, stable across processes (a rollout trigger, not security).
fn config_hash(data: &BTreeMap<String, String>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in data {
        for byte in key.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The coordinator's settings (environment variables of its flags).
fn coordinator_settings(
    coordinator: &Coordinator,
    managed: &ManagedCoordinator,
    namespace: &str,
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        (
            "COORDINATOR_LISTEN".to_string(),
            format!("0.0.0.0:{COORDINATOR_PORT}"),
        ),
        ("COORDINATOR_DATA_DIR".to_string(), DATA_DIR.to_string()),
        (
            "COORDINATOR_PCHANNELS".to_string(),
            managed.streaming.pchannels.to_string(),
        ),
        (
            "COORDINATOR_MAX_PCHANNELS_PER_NODE".to_string(),
            managed.streaming.max_pchannels_per_node.to_string(),
        ),
        // DDL through the WAL: the managed deployment always runs streaming nodes, so
        // every DDL is acknowledged by the control channel before the meta store, and
        // one interrupted by a coordinator crash is completed when it starts again.
        ("COORDINATOR_DDL_WAL".to_string(), "true".to_string()),
    ]);
    match managed.meta_store.clone().unwrap_or_default() {
        ManagedMetaStore::Redb(_) => {
            data.insert("COORDINATOR_META_STORE".into(), "redb".into());
        }
        ManagedMetaStore::Etcd(etcd) => {
            data.insert("COORDINATOR_META_STORE".into(), "etcd".into());
            data.insert(
                "COORDINATOR_ETCD_ENDPOINTS".into(),
                etcd.endpoints.join(","),
            );
            data.insert(
                "COORDINATOR_ETCD_PREFIX".into(),
                etcd.prefix.unwrap_or_else(|| {
                    format!(
                        "collection-operator/{namespace}/{}/",
                        coordinator.name_any()
                    )
                }),
            );
        }
    }
    data
}

/// Builds every object of `coordinator` (which must be managed and namespaced), with the
/// StreamingNode StatefulSet at `streaming_replicas` (decided by [`super::drain::plan_streaming_scale`]).
pub fn managed_objects(
    coordinator: &Coordinator,
    default_image: &str,
    streaming_replicas: u32,
) -> Result<ManagedObjects, InvalidManagedSpec> {
    let managed = coordinator
        .spec
        .managed
        .as_ref()
        .ok_or_else(|| InvalidManagedSpec("spec.managed is not set".into()))?;
    let namespace = coordinator
        .namespace()
        .ok_or_else(|| InvalidManagedSpec("the Coordinator has no namespace".into()))?;
    let owner = coordinator
        .controller_owner_ref(&())
        .ok_or_else(|| InvalidManagedSpec("the Coordinator has no uid yet".into()))?;
    let instance = coordinator.name_any();
    let names = ManagedNames::of(&instance);
    check_resources("spec.managed", managed.resources.as_ref())?;
    check_resources(
        "spec.managed.streaming",
        managed.streaming.resources.as_ref(),
    )?;
    let image = managed
        .image
        .clone()
        .unwrap_or_else(|| default_image.to_string());
    let meta = |name: &str, component: &str| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.clone()),
        labels: Some(labels(&instance, component)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };

    // --- coordinator ---
    let settings = coordinator_settings(coordinator, managed, &namespace);
    let hash = config_hash(&settings);
    let config_map = ConfigMap {
        metadata: meta(&names.coordinator, "coordinator"),
        data: Some(settings),
        ..Default::default()
    };
    let mut coordinator_env = vec![
        field_env("POD_IP", "status.podIP"),
        env(
            "COORDINATOR_ADVERTISE_ADDRESS",
            format!("$(POD_IP):{COORDINATOR_PORT}"),
        ),
    ];
    if let Some(secret) = &managed.credentials_secret {
        // The Secret's `token` (which may be `user:password`) is the accepted credential.
        coordinator_env.push(EnvVar {
            name: "COORDINATOR_AUTH_TOKENS".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: "token".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let redb = match managed.meta_store.clone().unwrap_or_default() {
        ManagedMetaStore::Redb(redb) => Some(redb),
        ManagedMetaStore::Etcd(_) => None,
    };
    let mut coordinator_volumes = Vec::new();
    let mut claims = Vec::new();
    match &redb {
        Some(redb) => claims.push(PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: Some(labels(&instance, "coordinator")),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: redb.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(redb.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        None => coordinator_volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }),
    }
    let coordinator_selector = selector(&instance, "coordinator");
    let coordinator_sts = StatefulSet {
        metadata: meta(&names.coordinator, "coordinator"),
        spec: Some(StatefulSetSpec {
            replicas: Some(managed.replicas as i32),
            service_name: Some(names.coordinator_headless.clone()),
            selector: LabelSelector {
                match_labels: Some(coordinator_selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&instance, "coordinator")),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash)])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.service_account.clone()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security()),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![Container {
                        name: "coordinator".into(),
                        image: Some(image.clone()),
                        args: Some(vec!["coordinator".into()]),
                        env: Some(coordinator_env),
                        env_from: Some(vec![EnvFromSource {
                            config_map_ref: Some(ConfigMapEnvSource {
                                name: names.coordinator.clone(),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }]),
                        ports: Some(vec![ContainerPort {
                            name: Some("grpc".into()),
                            container_port: COORDINATOR_PORT.into(),
                            ..Default::default()
                        }]),
                        readiness_probe: Some(grpc_probe(COORDINATOR_PORT, "", 5, 3)),
                        // A refused store for a minute: a restart may take the lease or the
                        // disk back; readiness alone would leave it out of the Service forever.
                        liveness_probe: Some(grpc_probe(COORDINATOR_PORT, "", 10, 6)),
                        resources: Some(resources(
                            managed.resources.as_ref(),
                            &COORDINATOR_RESOURCES,
                        )),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "data".into(),
                            mount_path: DATA_DIR.into(),
                            ..Default::default()
                        }]),
                        security_context: Some(hardened()),
                        ..Default::default()
                    }],
                    volumes: (!coordinator_volumes.is_empty()).then_some(coordinator_volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: (!claims.is_empty()).then_some(claims),
            ..Default::default()
        }),
        ..Default::default()
    };
    let coordinator_service = Service {
        metadata: meta(&names.coordinator, "coordinator"),
        spec: Some(ServiceSpec {
            selector: Some(coordinator_selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: COORDINATOR_PORT.into(),
                target_port: Some(IntOrString::String("grpc".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let coordinator_headless = Service {
        metadata: meta(&names.coordinator_headless, "coordinator"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(coordinator_selector.clone()),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: COORDINATOR_PORT.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pdb = |name: &str, component: &str, select: BTreeMap<String, String>| PodDisruptionBudget {
        metadata: meta(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(select),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let coordinator_selector_for_policy = coordinator_selector.clone();
    let coordinator_pdb = (managed.replicas > 1)
        .then(|| pdb(&names.coordinator, "coordinator", coordinator_selector));

    // --- streaming nodes ---
    let endpoint = coordinator
        .in_cluster_endpoint()
        .ok_or_else(|| InvalidManagedSpec("no coordinator endpoint".into()))?;
    let streaming_selector = selector(&instance, "streamingnode");
    let wal_volume = match &managed.streaming.wal_storage {
        Some(WalStorage::SharedClaim(shared)) => Volume {
            name: "wal".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: shared.claim_name.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        },
        Some(WalStorage::EmptyDir {}) | None => Volume {
            name: "wal".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    };
    // With credentials, the coordinator accepts only them on the WAL plane too (node
    // sessions) and presents them to the nodes: each node reads the same Secret key as a
    // file (its `--auth-token-file`), mounted read-only.
    let mut streaming_env = vec![field_env("POD_NAME", "metadata.name")];
    let mut streaming_mounts = vec![VolumeMount {
        name: "wal".into(),
        mount_path: WAL_DIR.into(),
        ..Default::default()
    }];
    let mut streaming_volumes = vec![wal_volume];
    if let Some(secret) = &managed.credentials_secret {
        streaming_env.push(env(
            "STREAMING_AUTH_TOKEN_FILE",
            format!("{CREDENTIALS_DIR}/token"),
        ));
        streaming_mounts.push(VolumeMount {
            name: "credentials".into(),
            mount_path: CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        streaming_volumes.push(Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                // Owner root, group the pod's fsGroup: readable by the node's user only.
                items: Some(vec![KeyToPath {
                    key: "token".into(),
                    path: "token".into(),
                    mode: Some(0o440),
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    let streaming_sts = StatefulSet {
        metadata: meta(&names.streaming, "streamingnode"),
        spec: Some(StatefulSetSpec {
            replicas: Some(streaming_replicas as i32),
            service_name: Some(names.streaming.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(streaming_selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&instance, "streamingnode")),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.service_account.clone()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security()),
                    // Time to hand its pchannels over when it is stopped.
                    termination_grace_period_seconds: Some(90),
                    containers: vec![Container {
                        name: "streamingnode".into(),
                        image: Some(image),
                        args: Some(vec![
                            "streaming-node".into(),
                            "--coordinator".into(),
                            endpoint,
                            "--wal-dir".into(),
                            WAL_DIR.into(),
                            "--listen".into(),
                            format!("0.0.0.0:{STREAMING_PORT}"),
                            "--advertise".into(),
                            format!(
                                "$(POD_NAME).{}.{namespace}.svc:{STREAMING_PORT}",
                                names.streaming
                            ),
                        ]),
                        env: Some(streaming_env),
                        ports: Some(vec![ContainerPort {
                            name: Some("grpc".into()),
                            container_port: STREAMING_PORT.into(),
                            ..Default::default()
                        }]),
                        readiness_probe: Some(grpc_probe(
                            STREAMING_PORT,
                            crate::streaming::node::READY_HEALTH_SERVICES[0],
                            5,
                            3,
                        )),
                        liveness_probe: Some(grpc_probe(
                            STREAMING_PORT,
                            crate::streaming::node::LIVE_HEALTH_SERVICE,
                            10,
                            6,
                        )),
                        resources: Some(resources(
                            managed.streaming.resources.as_ref(),
                            &STREAMING_RESOURCES,
                        )),
                        volume_mounts: Some(streaming_mounts),
                        security_context: Some(hardened()),
                        ..Default::default()
                    }],
                    volumes: Some(streaming_volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let streaming_service = Service {
        metadata: meta(&names.streaming, "streamingnode"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(streaming_selector.clone()),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: STREAMING_PORT.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let streaming_network_policy = NetworkPolicy {
        metadata: meta(&names.streaming, "streamingnode"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(streaming_selector.clone()),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(coordinator_selector_for_policy.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(STREAMING_PORT.into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    };
    let service_account = ServiceAccount {
        metadata: meta(&names.service_account, "coordinator"),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let streaming_pdb = pdb(&names.streaming, "streamingnode", streaming_selector);
    Ok(ManagedObjects {
        service_account,
        streaming_network_policy,
        config_map,
        coordinator_service,
        coordinator_headless,
        coordinator: coordinator_sts,
        coordinator_pdb,
        streaming_service,
        streaming: streaming_sts,
        streaming_pdb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::managed::drain::Ordinals;

    fn managed(spec: serde_json::Value) -> Coordinator {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "collections.dev/v1alpha1",
            "kind": "Coordinator",
            "metadata": {"name": "wal", "namespace": "search", "uid": "u-1"},
            "spec": {"managed": spec},
        }))
        .expect("a well-typed Coordinator")
    }

    fn env_of(sts: &StatefulSet) -> Vec<EnvVar> {
        sts.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers[0].env.clone().unwrap_or_default())
            .unwrap_or_default()
    }

    fn args_of(sts: &StatefulSet) -> Vec<String> {
        sts.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].args.clone())
            .unwrap_or_default()
    }

    #[test]
    fn redb_coordinator_objects() {
        let objects =
            managed_objects(&managed(serde_json::json!({})), "img:1", 5).expect("objects");
        let every_owner = [
            objects.config_map.metadata.owner_references.clone(),
            objects
                .coordinator_service
                .metadata
                .owner_references
                .clone(),
            objects
                .coordinator_headless
                .metadata
                .owner_references
                .clone(),
            objects.coordinator.metadata.owner_references.clone(),
            objects.streaming_service.metadata.owner_references.clone(),
            objects.streaming.metadata.owner_references.clone(),
            objects.streaming_pdb.metadata.owner_references.clone(),
        ];
        for owners in every_owner {
            let owners = owners.expect("owner references");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].uid, "u-1");
            assert_eq!(owners[0].kind, "Coordinator");
            assert_eq!(owners[0].controller, Some(true));
        }
        assert!(objects.coordinator_pdb.is_none(), "one replica: no PDB");
        let data = objects.config_map.data.clone().expect("data");
        assert_eq!(data["COORDINATOR_META_STORE"], "redb");
        assert_eq!(data["COORDINATOR_PCHANNELS"], "16");
        assert_eq!(data["COORDINATOR_MAX_PCHANNELS_PER_NODE"], "4");
        assert_eq!(data["COORDINATOR_DDL_WAL"], "true");
        let coordinator = objects.coordinator.spec.as_ref().expect("spec");
        assert_eq!(coordinator.replicas, Some(1));
        let claims = coordinator
            .volume_claim_templates
            .as_ref()
            .expect("a PVC for redb");
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        assert_eq!(
            objects.coordinator_service.metadata.name.as_deref(),
            Some("wal-coordinator")
        );
        let streaming = objects.streaming.spec.as_ref().expect("spec");
        assert_eq!(streaming.replicas, Some(5));
        assert_eq!(streaming.service_name.as_deref(), Some("wal-streamingnode"));
        let args = args_of(&objects.streaming);
        assert_eq!(args[0], "streaming-node");
        assert!(
            args.contains(&"http://wal-coordinator.search.svc:19530".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"$(POD_NAME).wal-streamingnode.search.svc:22222".to_string()),
            "stable addresses: {args:?}"
        );
        assert_eq!(
            Ordinals::named("wal-streamingnode")
                .of("wal-streamingnode-4.wal-streamingnode.search.svc:22222"),
            Some(4)
        );
    }

    /// With credentials the coordinator refuses node sessions without them, so every
    /// streaming node reads the same Secret key as its `--auth-token-file`; without
    /// credentials nothing of the Secret kind is mounted.
    #[test]
    fn streaming_nodes_get_the_coordinator_credential_as_a_file() {
        let spec = serde_json::json!({"credentialsSecret": {"name": "engine-token"}});
        let objects = managed_objects(&managed(spec), "img:1", 2).expect("objects");
        let pod = objects
            .streaming
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec");
        let container = &pod.containers[0];
        let env = container.env.as_ref().expect("env");
        let file = env
            .iter()
            .find(|e| e.name == "STREAMING_AUTH_TOKEN_FILE")
            .and_then(|e| e.value.clone())
            .expect("STREAMING_AUTH_TOKEN_FILE");
        let mount = container
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.name == "credentials")
            .expect("credentials mount");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(file, format!("{}/token", mount.mount_path));
        let volume = pod
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find(|v| v.name == "credentials")
            .and_then(|v| v.secret.as_ref())
            .expect("secret volume");
        assert_eq!(volume.secret_name.as_deref(), Some("engine-token"));
        let items = volume.items.as_ref().expect("items");
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("token", "token")
        );

        let open = managed_objects(&managed(serde_json::json!({})), "img:1", 2).expect("objects");
        let pod = open
            .streaming
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec");
        assert!(
            pod.volumes
                .as_ref()
                .is_some_and(|v| v.iter().all(|v| v.secret.is_none())),
            "no Secret volume without credentials"
        );
        assert!(
            pod.containers[0]
                .env
                .as_ref()
                .is_some_and(|e| e.iter().all(|e| e.name != "STREAMING_AUTH_TOKEN_FILE"))
        );
    }

    #[test]
    fn etcd_replicas_and_config_rollout() {
        let spec = serde_json::json!({
            "replicas": 3,
            "image": "mine:2",
            "metaStore": {"etcd": {"endpoints": ["http://etcd-0:2379", "http://etcd-1:2379"]}},
            "credentialsSecret": {"name": "engine-token"}
        });
        let objects = managed_objects(&managed(spec.clone()), "img:1", 5).expect("objects");
        let data = objects.config_map.data.clone().expect("data");
        assert_eq!(data["COORDINATOR_META_STORE"], "etcd");
        assert_eq!(
            data["COORDINATOR_ETCD_ENDPOINTS"],
            "http://etcd-0:2379,http://etcd-1:2379"
        );
        assert_eq!(
            data["COORDINATOR_ETCD_PREFIX"],
            "collection-operator/search/wal/"
        );
        let coordinator = objects.coordinator.spec.as_ref().expect("spec");
        assert_eq!(coordinator.replicas, Some(3));
        assert!(
            coordinator.volume_claim_templates.is_none(),
            "etcd needs no PVC"
        );
        assert!(objects.coordinator_pdb.is_some(), "several replicas: a PDB");
        let env = env_of(&objects.coordinator);
        let advertise = env
            .iter()
            .find(|e| e.name == "COORDINATOR_ADVERTISE_ADDRESS")
            .expect("advertise");
        assert_eq!(advertise.value.as_deref(), Some("$(POD_IP):19530"));
        let tokens = env
            .iter()
            .find(|e| e.name == "COORDINATOR_AUTH_TOKENS")
            .expect("auth");
        let secret = tokens
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("from the Secret");
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("engine-token", "token")
        );
        let image = objects
            .coordinator
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].image.clone());
        assert_eq!(image.as_deref(), Some("mine:2"));

        // A settings change changes the pod template (a rollout); the same spec does not.
        let hash = |objects: &ManagedObjects| {
            objects
                .coordinator
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.clone())
                .expect("annotations")[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let same = managed_objects(&managed(spec.clone()), "img:1", 5).expect("objects");
        assert_eq!(hash(&objects), hash(&same));
        let mut changed = spec;
        changed["metaStore"]["etcd"]["prefix"] = serde_json::json!("elsewhere/");
        let changed = managed_objects(&managed(changed), "img:1", 5).expect("objects");
        assert_ne!(hash(&objects), hash(&changed));
    }

    #[test]
    fn a_shared_claim_holds_the_wal() {
        let objects = managed_objects(
            &managed(serde_json::json!({"streaming": {"walStorage": {"sharedClaim": {"claimName": "wal-rwx"}}}})),
            "img:1",
            2,
        )
        .expect("objects");
        let volumes = objects
            .streaming
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.volumes.clone())
            .expect("volumes");
        let claim = volumes[0]
            .persistent_volume_claim
            .as_ref()
            .expect("a PVC volume");
        assert_eq!(claim.claim_name, "wal-rwx");
    }

    fn pod_spec(sts: &StatefulSet) -> PodSpec {
        sts.spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .expect("a pod template")
    }

    fn quantities(map: Option<&BTreeMap<String, Quantity>>) -> Vec<(String, String)> {
        map.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    }

    #[test]
    fn pods_run_hardened_under_their_own_token_less_account() {
        let objects =
            managed_objects(&managed(serde_json::json!({})), "img:1", 2).expect("objects");
        assert_eq!(
            objects.service_account.metadata.name.as_deref(),
            Some("wal-managed")
        );
        assert_eq!(
            objects.service_account.automount_service_account_token,
            Some(false)
        );
        assert_eq!(
            objects
                .service_account
                .metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].uid.as_str()),
            Some("u-1")
        );
        for (sts, component) in [
            (&objects.coordinator, "coordinator"),
            (&objects.streaming, "streamingnode"),
        ] {
            let pod = pod_spec(sts);
            assert_eq!(
                pod.service_account_name.as_deref(),
                Some("wal-managed"),
                "{component}"
            );
            assert_eq!(
                pod.automount_service_account_token,
                Some(false),
                "{component}"
            );
            assert_eq!(
                pod.security_context
                    .as_ref()
                    .and_then(|s| s.run_as_non_root),
                Some(true)
            );
            let container = &pod.containers[0];
            let security = container
                .security_context
                .clone()
                .expect("security context");
            assert_eq!(security.run_as_non_root, Some(true), "{component}");
            assert_eq!(
                security.allow_privilege_escalation,
                Some(false),
                "{component}"
            );
            assert_eq!(
                security.read_only_root_filesystem,
                Some(true),
                "{component}"
            );
            assert_eq!(
                security.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_string()])
            );
            assert_eq!(
                security.seccomp_profile.map(|p| p.type_).as_deref(),
                Some("RuntimeDefault")
            );
            let resources = container.resources.clone().expect("resources");
            assert!(
                quantities(resources.requests.as_ref())
                    .iter()
                    .any(|(k, _)| k == "cpu"),
                "{component}: {resources:?}"
            );
            assert!(
                quantities(resources.limits.as_ref())
                    .iter()
                    .any(|(k, _)| k == "memory"),
                "{component}: {resources:?}"
            );
        }
        let coordinator = pod_spec(&objects.coordinator).containers[0].clone();
        for probe in [coordinator.readiness_probe, coordinator.liveness_probe] {
            let grpc = probe.and_then(|p| p.grpc).expect("a grpc.health.v1 probe");
            assert_eq!(grpc.port, i32::from(COORDINATOR_PORT));
        }
        // A streaming node is ready while it holds a coordinator session and alive while
        // it answers: losing the coordinator must not restart it.
        let node = pod_spec(&objects.streaming).containers[0].clone();
        let probe = |probe: Option<Probe>| probe.and_then(|p| p.grpc).expect("a grpc probe");
        let ready = probe(node.readiness_probe);
        let live = probe(node.liveness_probe);
        assert_eq!(ready.port, i32::from(STREAMING_PORT));
        assert_eq!(ready.service, None);
        assert_eq!(live.service.as_deref(), Some("liveness"));
    }

    #[test]
    fn resources_come_from_the_spec_or_the_defaults() {
        let spec = serde_json::json!({
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
            "streaming": {"resources": {"limits": {"memory": "2Gi", "cpu": "1500m"}}}
        });
        let objects = managed_objects(&managed(spec), "img:1", 2).expect("objects");
        let coordinator = pod_spec(&objects.coordinator).containers[0]
            .resources
            .clone()
            .expect("resources");
        assert_eq!(
            quantities(coordinator.requests.as_ref()),
            [
                ("cpu".to_string(), "2".to_string()),
                ("memory".to_string(), "4Gi".to_string())
            ]
        );
        assert_eq!(
            quantities(coordinator.limits.as_ref()),
            [(
                "memory".to_string(),
                COORDINATOR_RESOURCES.limits[0].1.to_string()
            )],
            "limits left unset keep the default"
        );
        let streaming = pod_spec(&objects.streaming).containers[0]
            .resources
            .clone()
            .expect("resources");
        assert_eq!(
            quantities(streaming.limits.as_ref()),
            [
                ("cpu".to_string(), "1500m".to_string()),
                ("memory".to_string(), "2Gi".to_string())
            ]
        );
        assert_eq!(
            quantities(streaming.requests.as_ref()),
            STREAMING_RESOURCES
                .requests
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        let bad = serde_json::json!({"resources": {"limits": {"memory": "lots"}}});
        let error = managed_objects(&managed(bad), "img:1", 2).expect_err("not a quantity");
        assert!(
            error.0.contains("spec.managed.resources.limits.memory") && error.0.contains("lots"),
            "{error}"
        );
    }

    #[test]
    fn only_the_coordinator_pods_reach_the_streaming_port() {
        let objects =
            managed_objects(&managed(serde_json::json!({})), "img:1", 2).expect("objects");
        let policy = objects.streaming_network_policy.spec.clone().expect("spec");
        assert_eq!(
            policy.pod_selector.and_then(|s| s.match_labels),
            Some(selector("wal", "streamingnode"))
        );
        assert_eq!(policy.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = policy.ingress.expect("ingress rules");
        assert_eq!(rules.len(), 1, "{rules:?}");
        let from = rules[0].from.clone().expect("peers");
        assert_eq!(from.len(), 1);
        assert!(from[0].namespace_selector.is_none(), "same namespace only");
        let peer = from[0]
            .pod_selector
            .clone()
            .and_then(|s| s.match_labels)
            .expect("a pod selector");
        assert_eq!(peer, selector("wal", "coordinator"));
        let coordinator_labels = objects
            .coordinator
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("labels");
        assert!(
            peer.iter()
                .all(|(k, v)| coordinator_labels.get(k) == Some(v)),
            "selects the coordinator pods"
        );
        let streaming_pod_labels = objects
            .streaming
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("labels");
        assert!(
            !peer
                .iter()
                .all(|(k, v)| streaming_pod_labels.get(k) == Some(v)),
            "not the nodes themselves"
        );
        let ports = rules[0].ports.clone().expect("ports");
        assert_eq!(ports[0].port, Some(IntOrString::Int(STREAMING_PORT.into())));
    }
}
