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
