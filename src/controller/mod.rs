//! The three controllers and what they share: context, errors, server-side apply, events.

mod context;
mod error;
pub mod gateway_status;
pub mod mcpserver;
pub mod plugin;
pub mod securitypolicy;
mod ssa;
pub mod status;
pub mod usage;

pub use context::{Context, Scope};
pub use error::{Error, Result};
pub use ssa::{apply, apply_status};
