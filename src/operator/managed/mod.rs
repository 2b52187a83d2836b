//! A managed `Coordinator`: the Kubernetes objects it consists of ([`objects`]), and how
//! the StreamingNode StatefulSet is resized without ever removing a node that holds a
//! pchannel ([`drain`]). Everything here is pure: the controller ([`super::coordinator`])
//! reads the cluster and the coordinator's WAL placement, asks these functions what to
//! do, and does it.
//!
//! Objects (all owned by the Coordinator, so they go with it):
//! - ConfigMap `<name>-coordinator`: the coordinator's settings as `COORDINATOR_*`
//!   environment variables; its hash is a pod template annotation, so a change rolls the pods.
//! - StatefulSet `<name>-coordinator` (PVC `data` per replica on redb) with a headless
//!   Service `<name>-coordinator-headless`, and Service `<name>-coordinator` on 19530 — the
//!   endpoint Collections and aliases are applied through.
//! - StatefulSet `<name>-streamingnode` with headless Service `<name>-streamingnode`: stable
//!   pod names are the nodes' addresses (`<pod>.<name>-streamingnode.<ns>.svc:22222`), so a
//!   server ID in the placement maps to an ordinal.
//! - PodDisruptionBudgets (`maxUnavailable: 1`) for streaming nodes, and for coordinators
//!   when there are several.
//! - ServiceAccount `<name>-managed` for both kinds of pods, without an API token (they
//!   never call the Kubernetes API), and NetworkPolicy `<name>-streamingnode`: only the
//!   coordinator pods of the instance reach the streaming node port (the operator talks
//!   to the coordinator only).
//!
//! Every container runs with the restricted security context, resource requests and a
//! memory limit (spec or defaults); the coordinator's probes are `grpc.health.v1` checks,
//! which answer from its `CheckHealth`.

pub mod drain;
pub mod objects;

pub use drain::{
    DRAINING, Ordinals, ScaleStep, WAL_PLACEMENT_READY, plan_streaming_scale, streaming_replicas,
    streaming_status,
};
pub use objects::{
    CONFIG_HASH_ANNOTATION, COORDINATOR_RESOURCES, DATA_DIR, InvalidManagedSpec, ManagedNames,
    ManagedObjects, STREAMING_PORT, STREAMING_RESOURCES, WAL_DIR, managed_objects,
};
