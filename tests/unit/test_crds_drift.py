"""The committed CRDs are what the models generate (run `make crds` after editing api/),
and the chart carries the same files."""
from __future__ import annotations

from podbatch.api import KINDS
from podbatch.api.crdgen import CHART_CRD_DIR, CRD_DIR, check, file_name, rendered


def test_committed_crds_match_the_models():
    expected = rendered()
    assert sorted(expected) == sorted(file_name(i) for i in KINDS.values())
    for name, text in expected.items():
        path = CRD_DIR / name
        assert path.exists(), f"{path} missing: run make crds"
        assert path.read_text() == text, f"{path} differs from the models: run make crds"


def test_chart_crds_are_a_copy_of_crds():
    committed = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    assert committed == sorted(p.name for p in CHART_CRD_DIR.glob("*.yaml")), "run make crds"
    for name in committed:
        assert (CHART_CRD_DIR / name).read_bytes() == (CRD_DIR / name).read_bytes(), f"chart copy of {name} is stale"


def test_check_reports_drift(tmp_path, monkeypatch):
    import podbatch.api.crdgen as crdgen
    assert check() == []
    monkeypatch.setattr(crdgen, "CRD_DIR", tmp_path)
    (tmp_path / "podbatch.io_pools.yaml").write_text("stale\n")
    (tmp_path / "podbatch.io_old.yaml").write_text("stale\n")
    problems = crdgen.check()
    assert any("pools.yaml: differs" in p for p in problems)
    assert any("tasks.yaml: missing" in p for p in problems)
    assert any("old.yaml: not generated" in p for p in problems)
    assert crdgen.main(["--check"]) == 1
