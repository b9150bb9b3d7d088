"""Shared checks for the model tests: causality by perturbation, unused parameters, a few training steps."""

import io

import torch


def perturb_after(ids: torch.Tensor, t: int, n_vocab: int, generator=None) -> torch.Tensor:
    """A copy of ``ids`` (b, T) with every token after position t replaced by a different random token."""
    out = ids.clone()
    tail = out[:, t + 1 :]
    out[:, t + 1 :] = (tail + torch.randint(1, n_vocab, tail.shape, generator=generator)) % n_vocab
    return out


def assert_causal(model, ids: torch.Tensor, n_vocab: int, positions=None, offset: int = 0, atol=1e-5):
    """Changing tokens after t leaves logits up to t unchanged and changes some logit after t.

    ``offset`` shifts where the logits of token t sit (memory models return logits for the tokens only, offset 0).
    """
    model.eval()
    T = ids.shape[1]
    positions = positions if positions is not None else [0, T // 2, T - 2]
    with torch.no_grad():
        _, base = model(ids)
        for t in positions:
            _, changed = model(perturb_after(ids, t, n_vocab))
            assert torch.allclose(base[:, : t + 1 + offset], changed[:, : t + 1 + offset], atol=atol), (
                f"logits at positions <= {t} changed when only tokens after {t} changed"
            )
            assert not torch.allclose(base[:, t + 1 + offset :], changed[:, t + 1 + offset :], atol=atol), (
                f"logits after {t} did not react to changed tokens (the test would not catch a leak)"
            )
    model.train()


def assert_all_parameters_used(model, ids: torch.Tensor):
    """One forward/backward gives every trainable parameter a gradient (DDP needs no find_unused_parameters)."""
    model.zero_grad(set_to_none=True)
    loss, _ = model(ids, labels=ids)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"


def train_steps(model, ids: torch.Tensor, steps: int = 3, lr: float = 1e-2) -> list[float]:
    """A few AdamW steps on one batch; returns the losses."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = model(ids, labels=ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def save_load(model, fresh):
    """Round-trip ``model``'s state dict through bytes into ``fresh`` (strict) and return ``fresh``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer), strict=True)
    return fresh
