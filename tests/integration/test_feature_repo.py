"""The churn Feast repo with real Feast: apply, point-in-time retrieval, bounded materialization.

Everything is written under pytest's tmp_path; the repo in the checkout is only read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore
from feature_repo import generate as gen
from feature_repo import store as fs

pytestmark = pytest.mark.integration

CUSTOMERS = 600
SEED = 11
START = gen.DEFAULT_START
END = gen.DEFAULT_START + timedelta(days=gen.DEFAULT_DAYS)
EXPECTED_FEATURES = [*gen.feature_columns(), "charges_per_tenure_month"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("feast") / "data"
    gen.generate(path, CUSTOMERS, SEED)
    return path


@pytest.fixture(scope="module")
def store(data_dir: Path) -> FeatureStore:
    return fs.apply_repo(fs.REPO_DIR, data_dir)


def reference(entities: pd.DataFrame, data_dir: Path) -> pd.DataFrame:
    """The point-in-time join done by hand: latest source row at or before each entity timestamp."""
    joined = entities.sort_values(gen.TIMESTAMP)
    for view in (gen.ACTIVITY, gen.BILLING):
        src = pd.read_parquet(data_dir / f"{view}.parquet").sort_values(gen.TIMESTAMP)
        joined = pd.merge_asof(joined, src, on=gen.TIMESTAMP, by=gen.ENTITY_KEY, direction="backward")
    joined["charges_per_tenure_month"] = joined["monthly_charges"] / joined["tenure_months"].clip(lower=1)
    return joined.sort_values([gen.ENTITY_KEY, gen.TIMESTAMP], kind="stable").reset_index(drop=True)


def test_apply_registers_the_repo(store: FeatureStore, data_dir: Path) -> None:
    assert store.project == "churn"
    assert [e.name for e in store.list_entities()] == ["customer"]
    assert fs.feature_views(store) == ["customer_activity", "customer_billing", "customer_derived"]
    assert fs.feature_names(store) == EXPECTED_FEATURES
    assert fs.feature_refs(store)[0] == "customer_activity:sessions_30d"
    assert fs.feature_refs(store)[-1] == "customer_derived:charges_per_tenure_month"
    paths = sorted(source.path for source in store.list_data_sources())
    assert paths == [str(data_dir.resolve() / f"{v}.parquet") for v in (gen.ACTIVITY, gen.BILLING)]
    assert (data_dir / "registry.db").is_file()
    # applying again is a no-op, not an error
    again = fs.apply_repo(fs.REPO_DIR, data_dir)
    assert fs.feature_names(again) == EXPECTED_FEATURES


def test_point_in_time_on_hand_picked_rows(store: FeatureStore, data_dir: Path) -> None:
    activity = pd.read_parquet(data_dir / "customer_activity.parquet")
    billing = pd.read_parquet(data_dir / "customer_billing.parquet")
    # a customer whose activity changes between its 4th and 5th snapshot, so a leak would show
    history = {
        int(cid): rows.reset_index(drop=True)
        for cid, rows in activity.sort_values(gen.TIMESTAMP).groupby(gen.ENTITY_KEY)
    }
    cid = next(c for c, rows in history.items() if rows.loc[3, "sessions_30d"] != rows.loc[4, "sessions_30d"])
    rows = history[cid]
    earlier, later = rows.loc[3], rows.loc[4]
    between = earlier[gen.TIMESTAMP] + (later[gen.TIMESTAMP] - earlier[gen.TIMESTAMP]) / 2
    before_any = rows.loc[0, gen.TIMESTAMP] - timedelta(days=1)
    entities = pd.DataFrame(
        {
            gen.ENTITY_KEY: [cid, cid, cid],
            gen.TIMESTAMP: [between, later[gen.TIMESTAMP], before_any],
            "row": ["between", "exact", "before_any"],
        }
    )
    got = fs.historical_features(store, entities).set_index("row")
    activity_cols = list(gen.FEATURES[gen.ACTIVITY])
    # between two snapshots: the earlier one, never the later one
    assert got.loc["between", activity_cols].tolist() == earlier[activity_cols].tolist()
    assert got.loc["between", "sessions_30d"] != later["sessions_30d"]
    # at a snapshot's own timestamp: that snapshot (at or before is inclusive)
    assert got.loc["exact", activity_cols].tolist() == later[activity_cols].tolist()
    # before the first snapshot: the row is kept, its activity features are missing
    assert got.loc["before_any", activity_cols].isna().all()
    # billing and the on-demand feature as of the same moment
    bill = billing[(billing[gen.ENTITY_KEY] == cid) & (billing[gen.TIMESTAMP] <= between)]
    bill = bill.sort_values(gen.TIMESTAMP).iloc[-1]
    billing_cols = list(gen.FEATURES[gen.BILLING])
    assert got.loc["between", billing_cols].tolist() == bill[billing_cols].tolist()
    expected = bill["monthly_charges"] / max(bill["tenure_months"], 1)
    assert got.loc["between", "charges_per_tenure_month"] == pytest.approx(expected)


def test_every_entity_row_comes_back_once(store: FeatureStore) -> None:
    """Rows sharing customer and timestamp stay apart; rows with nothing to join are kept."""
    entities = pd.DataFrame(
        {
            gen.ENTITY_KEY: [1001, 1001, 1002, 99_999_999],
            gen.TIMESTAMP: pd.to_datetime(["2025-03-01", "2025-03-01", "2024-01-01", "2025-03-01"], utc=True),
            gen.LABEL: [0, 1, 1, 0],
        }
    )
    got = fs.historical_features(store, entities)
    assert got[gen.LABEL].tolist() == [0, 1, 1, 0]
    assert got.loc[0, EXPECTED_FEATURES].tolist() == got.loc[1, EXPECTED_FEATURES].tolist()
    assert got.loc[0, EXPECTED_FEATURES].notna().all()
    assert got.loc[2:, EXPECTED_FEATURES].isna().all().all()
    assert str(got["sessions_30d"].dtype) == "Int64"


def test_training_frame_matches_the_reference_join(store: FeatureStore, data_dir: Path) -> None:
    labels_uri = f"file://{data_dir / 'labels.parquet'}"
    got = fs.historical_features(store, labels_uri)
    want = reference(pd.read_parquet(data_dir / "labels.parquet"), data_dir)
    assert list(got.columns) == [gen.ENTITY_KEY, gen.TIMESTAMP, gen.LABEL, *EXPECTED_FEATURES]
    assert len(got) == len(want) == 2 * CUSTOMERS
    pd.testing.assert_frame_equal(
        got[[gen.ENTITY_KEY, gen.TIMESTAMP, gen.LABEL]], want[[gen.ENTITY_KEY, gen.TIMESTAMP, gen.LABEL]]
    )
    for column in EXPECTED_FEATURES:
        assert np.allclose(got[column].to_numpy(float), want[column].to_numpy(float)), column


def test_bounded_materialization_then_online_read(store: FeatureStore, data_dir: Path) -> None:
    done = fs.materialize_bounded(store, START, END, window=timedelta(days=30))
    assert len(done) == 6
    assert done[0][0] == START and done[-1][1] == END
    assert (data_dir / "online_store.db").is_file()
    cid = 1000 + CUSTOMERS // 2
    online = fs.online_features(store, [cid, 99_999_999])
    assert online[gen.ENTITY_KEY].tolist() == [cid, 99_999_999]
    for view in (gen.ACTIVITY, gen.BILLING):
        src = pd.read_parquet(data_dir / f"{view}.parquet")
        latest = src[src[gen.ENTITY_KEY] == cid].sort_values(gen.TIMESTAMP).iloc[-1]
        for column in gen.FEATURES[view]:
            assert online.loc[0, column] == pytest.approx(latest[column]), column
            assert pd.isna(online.loc[1, column]), column
    expected = online.loc[0, "monthly_charges"] / max(online.loc[0, "tenure_months"], 1)
    assert online.loc[0, "charges_per_tenure_month"] == pytest.approx(expected)


def test_a_model_learns_the_label(store: FeatureStore, data_dir: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = fs.historical_features(store, data_dir / "labels.parquet")
    x = frame[fs.feature_names(store)].to_numpy(float)
    y = frame[gen.LABEL].to_numpy()
    held_out = (frame[gen.ENTITY_KEY] % 4 == 0).to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x[~held_out], y[~held_out])
    auc = roc_auc_score(y[held_out], model.predict_proba(x[held_out])[:, 1])
    print(f"held-out AUC {auc:.3f}")
    assert auc > 0.7, auc


def test_missing_values_come_back_missing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gen.generate(data, 100, 3, missing={"sessions_30d": 0.2, "monthly_charges": 0.1})
    store = fs.apply_repo(fs.REPO_DIR, data)
    frame = fs.historical_features(store, data / "labels.parquet")
    assert 0.1 < frame["sessions_30d"].isna().mean() < 0.3
    assert 0.03 < frame["monthly_charges"].isna().mean() < 0.2
    assert frame["charges_per_tenure_month"].isna().sum() == frame["monthly_charges"].isna().sum()
    assert not frame["tenure_months"].isna().any()


def test_feast_cli_applies_a_clean_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`feast apply` / `feast materialize` in a copy of the repo, defaults only (no env var)."""
    copy = tmp_path / "repo"
    shutil.copytree(fs.REPO_DIR, copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    gen.generate(copy / "data", 30, 2)
    monkeypatch.delenv(fs.DATA_DIR_ENV, raising=False)
    env = {k: v for k, v in os.environ.items() if k != fs.DATA_DIR_ENV}
    feast = str(Path(sys.executable).with_name("feast"))
    for args in (["apply"], ["materialize", START.isoformat(), END.isoformat()]):
        run = subprocess.run(
            [feast, "-c", str(copy), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stdout + run.stderr
    assert {p.name for p in (copy / "data").iterdir()} >= {"registry.db", "online_store.db"}
    # the helpers find the same registry with their defaults (<repo>/data)
    store = fs.open_store(copy)
    assert sorted(s.path for s in store.list_data_sources()) == [
        "data/customer_activity.parquet",
        "data/customer_billing.parquet",
    ]
    frame = fs.historical_features(store, copy / "data" / "labels.parquet")
    assert len(frame) == 60 and not frame[EXPECTED_FEATURES].isna().any().any()
    assert fs.online_features(store, [1001])["sessions_30d"].notna().all()


def test_cluster_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from feature_repo.features import definitions

    monkeypatch.setenv("SLIPWAY_FEAST_REGISTRY", "s3://feast/churn/registry.db")
    monkeypatch.setenv("SLIPWAY_REDIS", "redis.feast:6379,password=secret")
    config = fs.load_config(fs.REPO_DIR, "s3://feast/churn", config="cluster")
    assert config.project == "churn"
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "redis.feast:6379,password=secret"
    assert config.registry.path == "s3://feast/churn/registry.db"
    defs = definitions("s3://feast/churn", s3_endpoint="http://minio:9000")
    assert defs.activity_source.path == "s3://feast/churn/customer_activity.parquet"
    assert defs.billing_source.file_options.s3_endpoint_override == "http://minio:9000"
