"""Write a random-weight model folder that ``transformers serve`` loads offline: transformers' own
config of ``--model`` (hf_models.make_config: the dimensions the hf_* mocks use), random weights,
and a word-level tokenizer built with the ``tokenizers`` library (nothing is downloaded).

The tokenizer's words are ``w0`` ... ``w96``, the words align's load generator sends, so a request of
``input=N`` words is N tokens; a chat template is included for ``/v1/chat/completions``.

    python mock/examples/hf_serve_model.py --model llama --layers 4 --out /tmp/llama-serve
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    import align  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_models import causal_lm, make_config, parser  # noqa: E402

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
WORDS = [f"w{i}" for i in range(97)]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}{% endif %}")


def write_tokenizer(out: Path, vocab_size: int) -> None:
    """A word-level tokenizer: special tokens, the load's words, then filler words up to the vocab."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    words = SPECIAL + WORDS + [f"x{i}" for i in range(vocab_size - len(SPECIAL) - len(WORDS))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    config = make_config(args.model, args.layers, small=args.small, tp=args.tp)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = 1, 2, 3
    model = causal_lm(args.model, config).to(torch.bfloat16)
    # a random model would stop at whatever token it picks as end-of-sequence: never end early, so a
    # request generates exactly its max_tokens
    model.generation_config.eos_token_id = None
    model.save_pretrained(out)
    write_tokenizer(out, config.vocab_size)
    (out / "align_model.json").write_text(json.dumps({"model": args.model, "layers": args.layers,
                                                      "small": args.small, "tp": args.tp, "seed": args.seed}) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
