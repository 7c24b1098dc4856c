import torch

from ray_training.events_encoder import EventsEncoder
from ray_training.settings import EventsConfig


def inputs(tokens: torch.Tensor) -> dict:
    shape = tokens.shape
    return {"tokens": tokens, "ages": torch.full(shape, 50.0), "deltas": torch.ones(shape),
            "values": torch.zeros(shape), "has_value": torch.zeros(shape)}


def test_hidden_state_ignores_later_events():
    torch.manual_seed(0)
    model = EventsEncoder(EventsConfig(vocab_size=30, max_seq_len=16)).eval()
    tokens = torch.randint(2, 30, (1, 12))
    changed = tokens.clone()
    changed[0, 7:] = torch.randint(2, 30, (5,))
    with torch.no_grad():
        a, b = model.hidden(**inputs(tokens)), model.hidden(**inputs(changed))
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert not torch.allclose(a[0, 7:], b[0, 7:])


def test_next_token_loss_ignores_padding_and_learns():
    torch.manual_seed(0)
    model = EventsEncoder(EventsConfig(vocab_size=10, max_seq_len=8, dropout=0.0))
    batch = inputs(torch.tensor([[2, 3, 4, 5, 2, 3, 0, 0], [2, 3, 4, 5, 2, 3, 4, 5]]))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model(**batch)[1].item()
    for _ in range(60):
        _, loss = model(**batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < first / 3


def test_the_encoder_learns_when_the_next_event_comes_and_its_value():
    """Two sequences with the same tokens, one fast (1-day gaps) and one slow (300 days), values
    rising: the gap and value heads learn them, so the states differ by tempo."""
    torch.manual_seed(0)
    model = EventsEncoder(EventsConfig(vocab_size=10, max_seq_len=8, dropout=0.0))
    tokens = torch.tensor([[2, 3, 4, 5, 2, 3, 4, 5]] * 2)
    batch = {"tokens": tokens, "ages": torch.full((2, 8), 50.0),
             "deltas": torch.tensor([[0.0] + [1.0] * 7, [0.0] + [300.0] * 7]),
             "values": torch.linspace(-1, 1, 8).repeat(2, 1), "has_value": torch.ones(2, 8)}
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = model(**batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        h = model.hidden(**batch)
        when = torch.expm1(model.when_head(h[:, 2:-1]).squeeze(-1) * 10)
        value = model.value_head(h[:, 2:-1]).squeeze(-1)
    assert (when[0] < 10).all() and (when[1] > 100).all()
    torch.testing.assert_close(value, batch["values"][:, 3:], atol=0.15, rtol=0)
