import torch

from dynabert.data import Encoded, collate, epoch_batches, eval_batches, shard


def test_epoch_batches_cover_every_example_once_and_repeat_exactly():
    for lengths in (None, [i % 17 + 1 for i in range(103)]):
        a = epoch_batches(103, 8, seed=42, stage="width", epoch=1, lengths=lengths)
        assert sorted(i for b in a for i in b) == list(range(103))
        assert a == epoch_batches(103, 8, seed=42, stage="width", epoch=1, lengths=lengths)
        assert a != epoch_batches(103, 8, seed=42, stage="width", epoch=2, lengths=lengths)
        assert a != epoch_batches(103, 8, seed=42, stage="depth", epoch=1, lengths=lengths)


def test_group_by_length_pads_less():
    lengths = [int(x) for x in torch.randint(3, 60, (800,), generator=torch.Generator().manual_seed(0))]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    plain = epoch_batches(800, 32, 0, "teacher", 0)
    grouped = epoch_batches(800, 32, 0, "teacher", 0, lengths)
    assert padded(grouped) < 0.7 * padded(plain)


def test_collate_pads_to_longest_in_batch_and_eval_order_restores():
    ids = [[2, 5, 3], [2, 5, 6, 7, 3], [2, 3]]
    enc = Encoded(ids, [[0] * len(x) for x in ids], torch.tensor([1, 0, 1]), pad_id=0)
    b = collate(enc, [0, 2])
    assert b.input_ids.tolist() == [[2, 5, 3], [2, 3, 0]] and b.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    batches, order = eval_batches(enc, 2)
    assert order == [2, 0, 1] and [x.input_ids.shape[1] for x in batches] == [3, 5]
    assert shard([10, 11, 12, 13, 14], 0, 2) == [10, 12, 14] and shard([10, 11, 12, 13, 14], 1, 2) == [11, 13]
