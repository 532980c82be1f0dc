//! Test-time scaling strategies. Each sees its backend only through `ponder_core::Backend`
//! and checks the capabilities it needs when it is built.

pub mod baseline;
pub mod best_of_n;
pub mod budget_forcing;
mod common;
pub mod deepconf;
pub mod early_stop;
pub mod judge;
pub mod registry;
pub mod sampler;
pub mod scoring;
pub mod self_consistency;
pub mod step;

pub use baseline::{Baseline, BaselineFactory};
pub use best_of_n::{BestOfN, BestOfNFactory};
pub use budget_forcing::{BudgetForcing, BudgetForcingFactory};
pub use deepconf::{DeepConfFactory, DeepConfOnlineFactory};
pub use registry::{canonical_name, Registry, ALIASES};
pub use self_consistency::{SelfConsistency, SelfConsistencyConfig, SelfConsistencyFactory};
pub use step::{BeamSearchFactory, DvtsFactory, OnlineBestOfNFactory, ParticleFilteringFactory};
