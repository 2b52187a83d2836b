//! Metadata: names and their validation, Milvus error codes, the hybrid TSO, and the
//! versioned meta table with its pure DDL planner. No I/O happens here; the coordinator's
//! engine persists what the planner decides.

pub mod change;
pub mod ddl;
pub mod error;
pub mod mvcc;
pub mod names;
pub mod schema;
pub mod table;
pub mod tso;

pub use change::{Change, CollectionId, DatabaseId};
pub use ddl::{Ddl, PlanContext};
pub use error::{MetaError, MetaResult};
pub use table::{LATEST, MetaTable};
pub use tso::Timestamp;
