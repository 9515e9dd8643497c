"""PEFT methods on tiny ViTs: what trains, what changes after a step, merging, adapter round-trips."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from essa_monai.peft import (
    APLALinear,
    LoRALinear,
    adapter_state_dict,
    apply_peft,
    count_parameters,
    load_adapter,
    make_peft_config,
    merge_peft,
    peft_config_of,
    save_adapter,
    trainable_parameters,
)

DEPTH, DIM = 3, 32
BLOCKS = [f"blocks.{i}" for i in range(DEPTH)]

# method, options, regex that every trainable parameter name must match, expected trainable count
CASES = {
    "apla_all_rows": ("apla", {}, r"blocks\.\d\.attn\.proj\.(weight|bias)", DEPTH * (DIM * DIM + DIM)),
    "apla_r5": ("apla", {"r": 5}, r"blocks\.\d\.attn\.proj\.trainable_(weight|bias)", DEPTH * 5 * (DIM + 1)),
    "lora_qv": ("lora", {}, r"blocks\.\d\.attn\.qkv\.lora_[AB]\.[qv]", DEPTH * 2 * (4 * DIM + DIM * 4)),
    "lora_all": (
        "lora",
        {"targets": ("qkv", "proj", "mlp.fc1", "mlp.fc2"), "qkv": "qkv", "r": 2},
        r"blocks\.\d\.(attn\.qkv\.lora_[AB]\.[qkv]|attn\.proj\.lora_[AB]\.all|mlp\.fc[12]\.lora_[AB]\.all)",
        DEPTH * (3 * 2 * (DIM + DIM) + 2 * (DIM + DIM) + 2 * (DIM + 4 * DIM) + 2 * (4 * DIM + DIM)),
    ),
    "bitfit_all": ("bitfit", {}, r".*bias", None),
    "bitfit_attention": ("bitfit", {"scope": "attention"}, r"blocks\.\d\.attn\.(qkv|proj)\.bias", DEPTH * (3 * DIM + DIM)),
    "bitfit_mlp": ("bitfit", {"scope": "mlp"}, r"blocks\.\d\.mlp\.fc[12]\.bias", DEPTH * (4 * DIM + DIM)),
    "vpt_shallow": ("vpt", {"num_tokens": 4}, r"vpt\.tokens", 1 * 4 * DIM),
    "vpt_deep": ("vpt", {"num_tokens": 4, "deep": True}, r"vpt\.tokens", DEPTH * 4 * DIM),
    "full": ("full", {}, r".*", None),
    "frozen": ("frozen", {}, r"$^", 0),
}


def train_step(model: nn.Module, x: torch.Tensor, steps: int = 1) -> None:
    """AdamW steps (lr 1e-2, weight decay 0.05) on a simple loss, trainable parameters only."""
    params = list(trainable_parameters(model).values())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05) if params else None
    model.train()
    for _ in range(steps):
        out = model.forward_features(x)
        if optimizer is None:  # frozen backbone: nothing to step
            break
        optimizer.zero_grad()
        loss = out.pow(2).mean() + out[:, 0].sum()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize("case", list(CASES))
def test_only_intended_tensors_train_and_only_they_change(tiny_backbone, case):
    method, options, pattern, expected_count = CASES[case]
    model = apply_peft(tiny_backbone(), method, **options)
    trainable = trainable_parameters(model)
    if method != "frozen":
        assert trainable, "no trainable tensor"
    assert all(re.fullmatch(pattern, name) for name in trainable), sorted(trainable)
    if expected_count is not None:
        assert count_parameters(model)[0] == expected_count
    if method == "bitfit":
        every_bias = [n for n, _ in model.named_parameters() if n.endswith("bias")]
        if options.get("scope", "all") == "all":
            assert sorted(trainable) == sorted(every_bias)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_step(model, torch.randn(2, 3, 28, 28))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(trainable)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"frozen {name} got a gradient"


@pytest.mark.parametrize("case", [c for c in CASES if c != "frozen"])
def test_merged_model_matches_unmerged_forward(tiny_backbone, case):
    method, options, _, _ = CASES[case]
    model = apply_peft(tiny_backbone(), method, **options)
    train_step(model, torch.randn(2, 3, 28, 28), steps=2)
    x = torch.randn(3, 3, 42, 56)
    with torch.no_grad():
        expected = model(x)
        expected_maps = model.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
        merged = merge_peft(copy.deepcopy(model))
        assert not any(isinstance(m, (APLALinear, LoRALinear)) for m in merged.modules())
        assert (merged(x) - expected).abs().max().item() < 1e-5
        maps = merged.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    for got, want in zip(maps, expected_maps):
        assert got.shape == want.shape == (3, DIM, 3, 4)
        assert (got - want).abs().max().item() < 1e-5


def test_merged_apla_and_lora_load_into_a_plain_timm_backbone(tiny_backbone):
    for method, options in [("apla", {"r": 7}), ("lora", {"targets": ("qkv", "fc2")})]:
        model = apply_peft(tiny_backbone(), method, **options)
        train_step(model, torch.randn(2, 3, 28, 28))
        plain = tiny_backbone(seed=123)
        plain.load_state_dict(merge_peft(copy.deepcopy(model)).state_dict())  # strict: same keys and shapes
        x = torch.randn(1, 3, 28, 28)
        with torch.no_grad():
            assert (plain.eval()(x) - model(x)).abs().max().item() < 1e-5


@pytest.mark.parametrize("case", [c for c in CASES if c != "frozen"])
def test_adapter_round_trips_through_a_file(tiny_backbone, tmp_path, case):
    method, options, _, _ = CASES[case]
    model = apply_peft(tiny_backbone(), method, **options)
    train_step(model, torch.randn(2, 3, 28, 28))
    path = save_adapter(model, tmp_path / "adapter.pt", note="test")

    fresh = tiny_backbone()  # same pretrained (seeded) weights, no PEFT yet
    load_adapter(fresh, path)
    assert peft_config_of(fresh).to_dict() == peft_config_of(model).to_dict()
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fresh.eval()(x))
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert set(saved) == set(adapter_state_dict(model))
    assert sum(t.numel() for k, t in saved.items() if k in trainable_parameters(model)) == count_parameters(model)[0]


def test_apla_subset_trains_exactly_r_rows_per_block(tiny_backbone):
    r = 6
    base = tiny_backbone()
    original = {b: base.get_submodule(f"{b}.attn.proj").weight.detach().clone() for b in BLOCKS}
    model = apply_peft(base, "apla", r=r, seed=3)
    train_step(model, torch.randn(2, 3, 28, 28))
    merged = merge_peft(copy.deepcopy(model))
    for b in BLOCKS:
        layer = model.get_submodule(f"{b}.attn.proj")
        assert layer.trainable_weight.shape == (r, DIM) and layer.frozen_weight.shape == (DIM - r, DIM)
        assert layer.frozen_weight.grad is None and layer.trainable_weight.grad is not None
        new = merged.get_submodule(f"{b}.attn.proj").weight
        changed_rows = (new != original[b]).any(dim=1).nonzero().flatten()
        assert changed_rows.numel() == r
        assert sorted(changed_rows.tolist()) == sorted(layer.row_indices[:r].tolist())


def test_apla_rows_are_seeded_saved_and_differ_between_blocks(tiny_backbone):
    rows = lambda m: [m.get_submodule(f"{b}.attn.proj").row_indices[:4].tolist() for b in BLOCKS]
    a = rows(apply_peft(tiny_backbone(), "apla", r=4, seed=1))
    b = rows(apply_peft(tiny_backbone(), "apla", r=4, seed=1))
    c = rows(apply_peft(tiny_backbone(), "apla", r=4, seed=2))
    assert a == b and a != c
    assert len({tuple(r) for r in a}) == DEPTH
    state = adapter_state_dict(apply_peft(tiny_backbone(), "apla", r=4, seed=1))
    assert [state[f"{blk}.attn.proj.row_indices"][:4].tolist() for blk in BLOCKS] == a


def test_apla_adapter_keeps_its_rows_even_if_the_seed_would_differ(tiny_backbone, tmp_path):
    model = apply_peft(tiny_backbone(), "apla", r=4, seed=11)
    path = save_adapter(model, tmp_path / "a.pt")
    other = apply_peft(tiny_backbone(), "apla", r=4, seed=11)
    with torch.no_grad():  # scramble the receiving model's rows: loading must restore them
        for b in BLOCKS:
            other.get_submodule(f"{b}.attn.proj").row_indices.copy_(torch.arange(DIM).flip(0))
    load_adapter(other, path)
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), other.eval()(x))


def test_lora_merge_and_unmerge_in_place_and_qv_mask(tiny_backbone):
    model = apply_peft(tiny_backbone(), "lora", r=4, alpha=32, dropout=0.1)
    layer = model.blocks[0].attn.qkv
    assert isinstance(layer, LoRALinear) and layer.scaling == 8.0 and set(layer.lora_A) == {"q", "v"}
    train_step(model, torch.randn(2, 3, 28, 28))
    original = layer.weight.detach().clone()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = model(x)
        layer.merge()
        delta = layer.weight - original
        assert (model(x) - expected).abs().max().item() < 1e-5
        assert delta[DIM : 2 * DIM].abs().max() == 0  # K third untouched
        assert delta[:DIM].abs().max() > 0 and delta[2 * DIM :].abs().max() > 0
        layer.unmerge()
        assert torch.allclose(layer.weight, original, atol=1e-6)
        assert (model(x) - expected).abs().max().item() < 1e-5


def test_lora_starts_equal_to_its_base(tiny_backbone):
    base = tiny_backbone().eval()
    model = apply_peft(copy.deepcopy(base), "lora", targets=("qkv", "proj")).eval()
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(base(x), model(x))


def test_vpt_deep_adds_prompts_at_every_block_and_keeps_shapes(tiny_backbone):
    for name in ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"]:
        base = tiny_backbone(name).eval()
        prefix = base.num_prefix_tokens
        model = apply_peft(copy.deepcopy(base), "vpt", num_tokens=4, deep=True).eval()
        assert model.num_prefix_tokens == prefix + 4
        seen = []
        hooks = [blk.register_forward_hook(lambda m, a, out: seen.append(out.shape[1])) for blk in model.blocks]
        x = torch.randn(2, 3, 42, 56)
        out = model(x)
        for h in hooks:
            h.remove()
        assert seen == [prefix + 4 + 12] * DEPTH  # prompts in the sequence of every block
        assert out.shape == base(x).shape == (2, DIM)
        maps = model.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        assert [m.shape for m in maps] == [(2, DIM, 3, 4)] * 3
        # every layer's prompts influence the output: each gets a gradient
        model.train()
        model.forward_features(x).sum().backward()
        grads = model.vpt.tokens.grad
        assert grads.shape == (DEPTH, 4, DIM) and all(grads[i].abs().sum() > 0 for i in range(DEPTH))


def test_vpt_fold_of_class_position_keeps_the_function(tiny_backbone):
    base = tiny_backbone().eval()
    model = apply_peft(copy.deepcopy(base), "vpt", num_tokens=3)
    with torch.no_grad():
        model.vpt.tokens.zero_()
        # with prompts removed again the folded model must equal the base model
        x = torch.randn(2, 3, 42, 28)
        tokens = model.patch_embed(x)
        folded = model._pos_embed(tokens)
        reference = base._pos_embed(base.patch_embed(x))
    assert model.pos_embed.shape == (1, 4, DIM) and base.pos_embed.shape == (1, 5, DIM)
    assert (folded - reference).abs().max().item() < 1e-6


def test_deepcopy_of_vpt_model_uses_its_own_prompts(tiny_backbone):
    model = apply_peft(tiny_backbone(), "vpt", num_tokens=2, deep=True).eval()
    clone = copy.deepcopy(model)
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        before = model(x)
        clone.vpt.tokens.add_(torch.randn_like(clone.vpt.tokens))  # (a constant shift is erased by LayerNorm)
        assert torch.equal(model(x), before)
        assert not torch.equal(clone(x), before)


class TinyClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, classes: int = 3):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(DIM, classes)

    def forward(self, x):
        return self.head(self.backbone(x))


@pytest.mark.parametrize("method", ["apla", "lora", "bitfit", "vpt", "frozen"])
def test_backbone_only_peft_keeps_the_head_trainable(tiny_backbone, tmp_path, method):
    model = apply_peft(TinyClassifier(tiny_backbone()), method, backbone="backbone")
    names = trainable_parameters(model)
    assert {"head.weight", "head.bias"} <= set(names)
    assert all(n.startswith(("head.", "backbone.")) for n in names)
    save_adapter(model, tmp_path / "clf.pt")
    fresh = TinyClassifier(tiny_backbone())
    load_adapter(fresh, tmp_path / "clf.pt")
    assert torch.equal(fresh.head.weight, model.head.weight)
    assert peft_config_of(fresh).method == method and fresh.peft_backbone == "backbone"


def test_config_errors_name_the_choices():
    with pytest.raises(ValueError, match="unknown PEFT method 'adapter'.*apla.*bitfit.*full.*lora.*vpt"):
        make_peft_config("adapter")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['rank'\] for PEFT method 'lora'"):
        make_peft_config("lora", rank=8)
    with pytest.raises(ValueError, match="qkv must be"):
        make_peft_config("lora", qkv="qx")
    with pytest.raises(ValueError, match="scope must be one of"):
        make_peft_config("bitfit", scope="norm")
    with pytest.raises(ValueError, match="APLA r must be"):
        make_peft_config("apla", r=0)
    assert make_peft_config({"method": "lora", "targets": ["qkv", "proj"]}).targets == ("qkv", "proj")


def test_applying_twice_or_a_mismatched_adapter_is_refused(tiny_backbone, tmp_path):
    model = apply_peft(tiny_backbone(), "lora")
    with pytest.raises(ValueError, match="already applied"):
        apply_peft(model, "apla")
    path = save_adapter(model, tmp_path / "lora.pt")
    with pytest.raises(ValueError, match="adapter is for"):
        load_adapter(apply_peft(tiny_backbone(), "apla"), path)
    with pytest.raises(ValueError, match="does not fit this model"):
        load_adapter(tiny_backbone(embed_dim=64), path)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not an essa-monai adapter"):
        load_adapter(tiny_backbone(), tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_adapter(tiny_backbone(), tmp_path / "missing.pt")
