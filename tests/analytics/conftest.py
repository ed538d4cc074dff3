"""A small processed lake for the governed-access tests: two tenants, two branches each,
one simulated day (every fault on), reference data loaded, processed by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from analytics.access import Session, connect
from analytics.grants import GrantBook
from audit.log import AuditLog
from contracts import ContractRegistry, load_registry
from lake.keys import KeyStore
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import process_once
from pipelines.settings import Settings, load_settings
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing

CONFIG = SimConfig(clients=2, branches=2, days=1, seed=7)


@dataclass(frozen=True, slots=True)
class GovernedLake:
    settings: Settings
    store: Store
    registry: ContractRegistry
    tenants: list[str]  # sorted
    branches: dict[str, list[str]]  # tenant -> its branches

    @property
    def keys(self) -> KeyStore:
        return KeyStore(self.settings.keys)

    def book(self) -> GrantBook:
        return GrantBook(self.store, self.registry, self.audit())

    def audit(self) -> AuditLog:
        return AuditLog(self.audit_dir, component="access", fail_closed=True)

    @property
    def audit_dir(self) -> Path:
        return self.settings.data_dir / "audit" / "access"

    def session(self, principal: str, purpose: str, **kwargs: object) -> Session:
        return connect(
            self.store,
            self.registry,
            self.keys,
            self.audit(),
            principal=principal,
            purpose=purpose,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="package")
def governed_lake(tmp_path_factory: pytest.TempPathFactory) -> GovernedLake:
    settings = load_settings(data_dir=tmp_path_factory.mktemp("governed"))
    result = simulate_to_landing(CONFIG, settings.sim_dir, settings.landing)
    registry = load_registry()
    store = Store.from_uri(settings.lake)
    load_reference(store, result.reference_dir, registry)
    while process_once(settings) is not None:
        pass
    book = GrantBook(store, registry)
    tenants = book.known_tenants()
    assert len(tenants) == 2
    return GovernedLake(
        settings, store, registry, tenants, {t: book.branches_of(t) for t in tenants}
    )
