"""The private transformers API we rely on (memorymodels/hf_adapter.py) still has the signatures we expect."""

from memorymodels import hf_adapter


def test_the_private_trainer_methods_we_override_keep_their_signatures():
    problems = hf_adapter.upstream_mismatches()
    assert not problems, "\n".join(problems)


def test_a_changed_signature_is_named_with_what_was_expected(monkeypatch):
    monkeypatch.setitem(hf_adapter.UPSTREAM, "Trainer._save_checkpoint", ("self", "model", "trial", "metrics"))
    monkeypatch.setitem(hf_adapter.UPSTREAM, "Trainer._gone", ("self",))
    problems = hf_adapter.upstream_mismatches()
    assert any("changed Trainer._save_checkpoint: expected parameters (self, model, trial, metrics), found "
               "(self, model, trial); update memorymodels/hf_adapter.py" in p for p in problems), problems
    assert any("has no Trainer._gone" in p for p in problems), problems
