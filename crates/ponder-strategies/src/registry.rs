//! The strategy registry: names → factories, for the CLI, the server and the harness.

use std::collections::BTreeMap;
use std::sync::Arc;

use ponder_core::{BuildError, StrategyFactory, StrategyInfo};

use crate::baseline::BaselineFactory;
use crate::best_of_n::BestOfNFactory;
use crate::budget_forcing::BudgetForcingFactory;
use crate::deepconf::{DeepConfFactory, DeepConfOnlineFactory};
use crate::self_consistency::SelfConsistencyFactory;
use crate::step::{
    AdaptiveScalingFactory, BeamSearchFactory, DvtsFactory, OnlineBestOfNFactory,
    ParticleFilteringFactory, PhiDecodingFactory, UncertaintyCotFactory,
};

/// Short names accepted for a strategy, and the strategy each stands for.
pub const ALIASES: &[(&str, &str)] = &[("cot", "chain-of-thought")];

/// The strategy name an [`ALIASES`] short name stands for; any other name as it is (what
/// run records store, so `cot` and `chain-of-thought` runs compare as one).
pub fn canonical_name(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, target)| target)
}

/// Strategies by name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn StrategyFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// Every strategy Ponder ships.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        r.register(Arc::new(SelfConsistencyFactory));
        r.register(Arc::new(BaselineFactory::baseline()));
        r.register(Arc::new(BaselineFactory::chain_of_thought()));
        r.register(Arc::new(BestOfNFactory));
        r.register(Arc::new(BudgetForcingFactory));
        r.register(Arc::new(DeepConfFactory::default()));
        r.register(Arc::new(DeepConfFactory::named("deepconf-offline")));
        r.register(Arc::new(DeepConfOnlineFactory));
        r.register(Arc::new(OnlineBestOfNFactory));
        r.register(Arc::new(BeamSearchFactory));
        r.register(Arc::new(DvtsFactory));
        r.register(Arc::new(ParticleFilteringFactory));
        r.register(Arc::new(AdaptiveScalingFactory));
        r.register(Arc::new(UncertaintyCotFactory));
        r.register(Arc::new(PhiDecodingFactory));
        r
    }

    /// Adds (or replaces) a strategy under its own name.
    pub fn register(&mut self, factory: Arc<dyn StrategyFactory>) {
        self.factories.insert(factory.info().name, factory);
    }

    /// The factory called `name` (or an [`ALIASES`] short name of it, `cot` for
    /// `chain-of-thought`); the error lists the known names.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn StrategyFactory>, BuildError> {
        self.factories
            .get(canonical_name(name))
            .ok_or_else(|| BuildError::UnknownStrategy {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    pub fn infos(&self) -> Vec<StrategyInfo> {
        self.factories.values().map(|f| f.info()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_strategy_lists_the_known_ones() {
        let err = Registry::builtin()
            .get("self-consistensy")
            .err()
            .map(|e| e.to_string());
        let err = err.expect("unknown");
        assert!(
            err.starts_with("unknown strategy `self-consistensy` (known: "),
            "{err}"
        );
        // Every registered name is listed, in order.
        let names = Registry::builtin().names().join(", ");
        assert!(err.ends_with(&format!("(known: {names})")), "{err}");
        assert!(names.contains("baseline") && names.contains("self-consistency"));
    }

    #[test]
    fn aliases_name_registered_strategies() {
        let r = Registry::builtin();
        let cot = r.get("cot").expect("cot is an alias");
        assert_eq!(cot.info().name, "chain-of-thought");
        for (alias, target) in ALIASES {
            assert!(r.names().contains(target), "{alias} -> {target}");
            assert!(!r.names().contains(alias), "{alias} shadows a strategy");
        }
        assert!(r.get("Cot").is_err());
        assert_eq!(canonical_name("cot"), "chain-of-thought");
        assert_eq!(canonical_name("self-consistency"), "self-consistency");
        assert_eq!(canonical_name("Cot"), "Cot");
    }
}
