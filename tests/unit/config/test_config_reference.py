"""docs/config-keys.md is generated from the configuration model and must match it."""

from __future__ import annotations

from pathlib import Path

from balancer.config import model, reference

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / reference.OUTPUT


def test_the_committed_reference_matches_the_model():
    assert COMMITTED.read_text() == reference.render(), (
        f"{reference.OUTPUT} is stale: run `{reference.COMMAND}` "
        "(or `python -m balancer.config.reference`) and commit the result"
    )


def _documented_keys() -> set[tuple[str, str]]:
    return {(table.path, key.name) for table in reference.tables() for key in table.keys}


def test_every_table_and_key_of_the_model_is_listed():
    documented = _documented_keys()
    assert ("[global]", "workers") in documented
    assert ("frontend.rule.if", "path_beg") in documented
    assert ("[[backend.server]]", "address") in documented
    listed_models = {table.model for table in reference.tables()}
    expected = {
        value
        for value in vars(model).values()
        if isinstance(value, type) and issubclass(value, model.Model) and value not in (model.Model, model.Config)
    }
    assert expected <= listed_models
    for table in reference.tables():
        assert [key.name for key in table.keys] == [
            field.alias or name for name, field in table.model.model_fields.items()
        ]


def test_a_key_shows_its_type_default_and_allowed_values():
    rows = {(table.path, key.name): key for table in reference.tables() for key in table.keys}
    grace = rows[("[global]", "grace")]
    assert grace.default == '`"30s"`' and grace.type.startswith("duration")
    assert rows[("[global]", "workers")].type == "integer (≥ 0, ≤ 256)"
    assert rows[("frontend.tls", "min_version")].type == 'one of `"1.2"`, `"1.3"`'
    assert rows[("[[backend.server]]", "name")].default == "required"
    assert rows[("[global]", "log_facility")].description == "of access lines sent to syslog"  # model.py's comment


def test_a_field_description_in_the_model_wins():
    class Probe(model.Model):
        knob: int = model.Field(3, description="what the knob turns")

    class Root(model.Model):
        probe: Probe = Probe()

    (table,) = reference.tables(Root)
    assert table.path == "[probe]"
    assert table.keys[0].description == "what the knob turns"


def test_the_command_writes_the_file(tmp_path):
    target = tmp_path / "keys.md"
    assert reference.main([str(target)]) == 0
    assert target.read_text() == reference.render()
