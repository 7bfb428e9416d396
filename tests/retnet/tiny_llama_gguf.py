"""A tiny random Llama written as a GGUF the way llama.cpp's converter writes one (for the tests).

`write_tiny_llama_gguf(path)` returns the *original* (Hugging Face layout) weights it stored, so a
test can compare the converter against them. Like llama.cpp, q and k rows are permuted so rotary
pairs sit next to each other; the permutation here is written from llama.cpp's description, not
shared with the converter's inverse.
"""

from __future__ import annotations

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ġa n", "Ġan d", "e r", "o n", "Ġ s", "r e", "Ġ w", "o r"]
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>\n'}}{% endfor %}")


def byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (printable Latin-1 kept, the rest shifted past 255)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary() -> tuple[list[str], list[int]]:
    tokens = SPECIALS + byte_chars() + [m.replace(" ", "") for m in MERGES]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, types


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, rows i and i + K/2 become rows 2i and 2i + 1."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path, *, layers=2, hidden=64, heads=4, kv_heads=2, ffn=96, rope_base=10000.0,
                          eps=1e-5, seed=0, quantize=None, architecture="llama", skip=(), extra_tensors=(),
                          tokenizer_model="gpt2") -> dict[str, np.ndarray]:
    """Write a random Llama GGUF; returns {hf_name: float32 array} of what it holds (after any quantization)."""
    import gguf

    rng = np.random.default_rng(seed)
    K = hidden // heads
    tokens, types = vocabulary()
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_dimension_count(K)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    hf: dict[str, np.ndarray] = {}

    def put(gguf_name, hf_name, array, permute_heads=None):
        if gguf_name in skip:
            return
        array = array.astype(np.float32)
        stored = llama_cpp_permute(array, permute_heads) if permute_heads else array
        if quantize is not None and array.ndim == 2:
            q = gguf.quants.quantize(stored, quantize)
            w.add_tensor(gguf_name, q, raw_dtype=quantize)
            stored = gguf.quants.dequantize(q, quantize).reshape(stored.shape)
            # What the file now holds, back in the original row order.
            array = _unpermute(stored, permute_heads) if permute_heads else stored
        else:
            w.add_tensor(gguf_name, stored)
        hf[hf_name] = array

    def rand(*shape, scale=0.2):
        return rng.normal(0, scale, size=shape)

    put("token_embd.weight", "model.embed_tokens.weight", rand(vocab, hidden, scale=0.5))
    put("output_norm.weight", "model.norm.weight", 1 + rand(hidden, scale=0.1))
    for i in range(layers):
        p, b = f"blk.{i}.", f"model.layers.{i}."
        put(p + "attn_norm.weight", b + "input_layernorm.weight", 1 + rand(hidden, scale=0.1))
        put(p + "ffn_norm.weight", b + "post_attention_layernorm.weight", 1 + rand(hidden, scale=0.1))
        put(p + "attn_q.weight", b + "self_attn.q_proj.weight", rand(heads * K, hidden), heads)
        put(p + "attn_k.weight", b + "self_attn.k_proj.weight", rand(kv_heads * K, hidden), kv_heads)
        put(p + "attn_v.weight", b + "self_attn.v_proj.weight", rand(kv_heads * K, hidden))
        put(p + "attn_output.weight", b + "self_attn.o_proj.weight", rand(hidden, heads * K))
        put(p + "ffn_gate.weight", b + "mlp.gate_proj.weight", rand(ffn, hidden))
        put(p + "ffn_up.weight", b + "mlp.up_proj.weight", rand(ffn, hidden))
        put(p + "ffn_down.weight", b + "mlp.down_proj.weight", rand(hidden, ffn))
    for name, array in extra_tensors:
        w.add_tensor(name, array.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
