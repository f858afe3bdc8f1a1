"""Online features from Feast: entity keys -> rows in the model's feature order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .instances import Key
from .settings import Settings

log = logging.getLogger(__name__)


class OnlineFeatures:
    """Looks keys up in the online store of a feature service; blocking (run it off the event loop).

    One `get_online_features` call per lookup, each distinct key once. A feature of the model that
    the service does not serve, or that the store has no value for, comes back as NaN.
    """

    def __init__(self, store: Any, service_name: str, entity_key: str, features: Sequence[str]) -> None:
        from feature_repo.store import feature_service

        self.store = store
        self.service = feature_service(store, service_name)
        self.entity_key = entity_key
        self.features = tuple(features)
        served = {feat.name for projection in self.service.feature_view_projections for feat in projection.features}
        self.unserved = [f for f in self.features if f not in served]
        if self.unserved:
            log.warning(
                "feature service %s does not serve %s: requests must give them or they are imputed",
                service_name,
                ", ".join(self.unserved),
            )

    def key_type(self) -> type[int] | type[str]:
        """int or str, from the Feast entity whose join key is the entity key (int if unknown)."""
        for entity in self.store.list_entities():
            if entity.join_key == self.entity_key:
                return str if "STRING" in str(entity.value_type).upper() else int
        return int

    def __call__(self, keys: Sequence[Key]) -> np.ndarray:
        """float32 (len(keys), n_features) for distinct `keys`, in order."""
        response = self.store.get_online_features(
            features=self.service, entity_rows=[{self.entity_key: key} for key in keys]
        ).to_dict()
        out = np.full((len(keys), len(self.features)), np.nan, dtype=np.float32)
        for j, name in enumerate(self.features):
            column = response.get(name)
            if column is not None:
                out[:, j] = np.array(column, dtype=np.float64)  # None -> NaN
        return out


def open_online_features(
    repo_dir: str | None, config: str, service_name: str, entity_key: str, features: Sequence[str]
) -> OnlineFeatures:
    """The Feast store of `repo_dir` (default: this checkout's feature_repo/) for a feature service."""
    from feature_repo.store import open_store

    store = open_store(repo_dir, None, config)
    return OnlineFeatures(store, service_name, entity_key, features)


def online_lookup(settings: Settings, features: Sequence[str]) -> tuple[OnlineFeatures | None, type[int] | type[str]]:
    """The online store the settings enrich from (None: no enrichment) and its entity key's type."""
    if settings.feature_service is None or settings.entity_key is None:
        return None, int
    online = open_online_features(
        settings.feature_repo, settings.feast_config, settings.feature_service, settings.entity_key, features
    )
    return online, online.key_type()
