"""transformers backend: NF4 base on CUDA (fp32 on CPU), PEFT adapters switched by name.

The base is loaded once and wrapped by PEFT on the first adapter; every later adapter is added
to the same model by name (`load_adapter`) and chosen per request, so switching never reloads
the base. A batch whose rows use different adapters runs in one forward pass through PEFT's
`adapter_names` (the S-LoRA way of serving many adapters at once). Loaded adapters are bounded
by `adapter_cache_mb`; the least recently used are deleted from the model beyond it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from rune_mcp.basemodel import BaseModelInfo, ensure_derived
from rune_mcp.config import Settings
from rune_mcp.device import pick_device
from rune_mcp.errors import BackendError, InputError, ModelError
from rune_mcp.runtime.base import (
    BASE_ONLY,
    Active,
    Adapters,
    AdapterSpec,
    Backend,
    Generation,
    Message,
    Request,
    adapter_ids,
)
from rune_mcp.runtime.cache import AdapterCache

log = logging.getLogger(__name__)


def _peft_name(adapter_id: str) -> str:
    """PEFT keeps adapters in ModuleDicts, whose keys may not contain dots. `a.b` -> `r_a_b`."""
    return "r_" + re.sub(r"\W", "_", adapter_id)


def _peft_size(spec: AdapterSpec) -> int:
    """Bytes of the adapter's PEFT weights; the folder must hold them as safetensors."""
    folder = spec.peft_dir
    if folder is None or not (folder / "adapter_model.safetensors").is_file():
        raise BackendError(f"adapter {spec.adapter_id} has no PEFT safetensors folder; "
                           "remove it and remember the session again.")
    return (folder / "adapter_model.safetensors").stat().st_size


def chat_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """The chat template around `messages`, with the generation prompt, as token ids."""
    return list(tokenizer(chat_text(tokenizer, messages), add_special_tokens=False)["input_ids"])


def chat_text(tokenizer: Any, messages: Sequence[Message]) -> str:
    if not messages:
        raise InputError("no messages to answer; pass at least one user message.")
    try:
        return str(tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                 add_generation_prompt=True))
    except Exception as exc:  # jinja2 errors from the model's own template
        raise InputError(f"the model's chat template rejected these messages ({exc}).") from exc


def text_ids(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    """Tokens of `text`, no BOS; control tokens written as text count only with `special`."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])


def forward_logits(model: Any, ids: Sequence[int], first: int) -> Any:
    """One forward pass of `model` (as it is: a PEFT model with its active adapters) over
    `ids`; the next-token logits of positions `first`.. as float32 numpy."""
    import torch

    if not 0 <= first < len(ids):
        raise InputError(f"logits from position {first} of {len(ids)} tokens: there is none.")
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([list(ids)], device=model.device))
    return out.logits[0, first:].float().cpu().numpy()


class TransformersBackend(Backend):
    """PEFT multi-adapter serving; the default when a CUDA GPU is present."""

    name = "transformers"

    def __init__(self, settings: Settings, base: BaseModelInfo, device: str | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        self.settings = settings
        self.base = base
        self.fingerprint = base.fingerprint
        self.device = device or pick_device(settings)
        folder = ensure_derived(settings, base, quiet=True)
        start = time.perf_counter()
        if self.device == "cpu":
            torch.set_num_threads(settings.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model: Any = _load_model(folder, self.device)
        self.load_ms = (time.perf_counter() - start) * 1000
        self.quantized = self.device == "cuda"
        self._peft: Any = None
        self._lock = threading.RLock()
        self._cache: AdapterCache[str] = AdapterCache(
            settings.adapter_cache_mb << 20, load=self._load, size=_peft_size, free=self._unload)

    # --- adapters ---------------------------------------------------------------------
    def _load(self, spec: AdapterSpec) -> str:
        """Add the adapter to the model by name (the first one wraps the base in PEFT)."""
        from peft import PeftModel

        folder, name = str(spec.peft_dir), _peft_name(spec.adapter_id)
        try:
            with warnings.catch_warnings():
                # peft calls a transformers method that transformers 5 has renamed.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                        category=FutureWarning)
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self.model, folder,
                                                           adapter_name=name, is_trainable=False)
                    self._peft.eval()
                else:
                    self._peft.load_adapter(folder, adapter_name=name, is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise BackendError(f"PEFT could not load adapter {spec.adapter_id} ({exc}); it may "
                               "not fit this base model.") from exc
        return name

    def _unload(self, name: str) -> None:
        self._peft.delete_adapter(name)

    def _configure(self, target: Active) -> None:
        """Make exactly `target` (with its scales) the model's active adapters (lock held)."""
        from peft.tuners.lora import LoraLayer

        names = [_peft_name(spec.adapter_id) for spec, _ in target]
        self._peft.base_model.set_adapter(names, inference_mode=True)
        scales = {_peft_name(spec.adapter_id): scale for spec, scale in target}
        for module in self._peft.modules():
            if isinstance(module, LoraLayer):
                for name, scale in scales.items():
                    module.set_scale(name, scale)

    # --- generation -------------------------------------------------------------------
    def _generate(self, request: Request, target: Active) -> Generation:
        return self._batch([request.messages], [target], request)[0]

    def generate_batch(
        self,
        requests: Sequence[tuple[Sequence[Message], AdapterSpec | None]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[Generation]:
        """Answer several chats in one batch, each row with its own adapter (or none)."""
        targets = [self._resolve([spec] if spec else []) for _, spec in requests]
        return self._batch([m for m, _ in requests], targets,
                           Request((), max_tokens, temperature, seed))

    def _stream(self, request: Request, target: Active) -> Iterator[str]:
        """Yields text pieces as `_batch` produces them in a worker thread."""
        from transformers import TextIteratorStreamer

        streamer: Any = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._batch([request.messages], [target], request, streamer)
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        def pieces() -> Iterator[str]:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            yield from streamer
            thread.join()
            if errors:
                raise errors[0]

        return pieces()

    def _batch(self, chats: Sequence[Sequence[Message]], targets: Sequence[Active],
               request: Request, streamer: Any = None) -> list[Generation]:
        """Generate for every chat, row `i` under `targets[i]`; `request` gives the settings."""
        import torch
        from transformers import LogitsProcessorList

        from rune_mcp.runtime.repetition import transformers_guard

        inputs = self._encode(chats)
        with self._lock:
            start = time.perf_counter()
            for target in targets:
                self._cache.ensure(target)
            kwargs = self._adapter_kwargs(targets)
            if self.settings.repeat_ngram:
                kwargs["logits_processor"] = LogitsProcessorList([transformers_guard(
                    inputs["input_ids"].shape[1], self.settings.repeat_ngram,
                    self.settings.repeat_times)])
            swapped = time.perf_counter()
            clock = _Clock(streamer)
            torch.manual_seed(self.settings.seed if request.seed is None else request.seed)
            with torch.inference_mode(), self._scope(targets):
                out = self._runner().generate(
                    **inputs, generation_config=self._gen_config(request), streamer=clock, **kwargs)
        results = self._results(inputs, out, clock, swapped - start)
        for result, target in zip(results, targets, strict=True):
            result.adapters = adapter_ids(target)
        return results

    def _adapter_kwargs(self, targets: Sequence[Active]) -> dict[str, Any]:
        """One adapter per row (or none) -> PEFT's `adapter_names`; a composed set -> active set."""
        if self._peft is None or all(not t for t in targets):
            return {}
        if all(len(t) <= 1 and all(s == 1.0 for _, s in t) for t in targets):
            names = [_peft_name(t[0][0].adapter_id) if t else BASE_ONLY for t in targets]
            for t in targets:
                if t:
                    self._configure(t)  # restores scale 1.0 after any composition
            return {"adapter_names": names}
        if len(targets) != 1:
            raise BackendError("a batch can combine several adapters only for a single row; "
                               "send composed requests one at a time.")
        self._configure(targets[0])
        return {}

    def _scope(self, targets: Sequence[Active]) -> Any:
        import contextlib

        if self._peft is not None and all(not t for t in targets):
            return self._peft.disable_adapter()
        return contextlib.nullcontext()

    def _runner(self) -> Any:
        return self._peft if self._peft is not None else self.model

    def _gen_config(self, request: Request) -> Any:
        import transformers

        config: Any = transformers.GenerationConfig
        sample = request.temperature > 0
        extra = {"temperature": request.temperature, "top_k": 40, "top_p": 0.95} if sample else {}
        return config(
            max_new_tokens=request.max_tokens, do_sample=sample,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id, **extra)

    def _encode(self, chats: Sequence[Sequence[Message]]) -> Any:
        if not chats:
            raise InputError("no messages to answer; pass at least one user message.")
        texts = [chat_text(self.tokenizer, chat) for chat in chats]
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return enc.to(self.model.device)

    def _results(self, inputs: Any, out: Any, clock: _Clock, swap_s: float) -> list[Generation]:
        width = inputs["input_ids"].shape[1]
        eos = self.tokenizer.eos_token_id
        results = []
        for row in range(out.shape[0]):
            new = out[row, width:].tolist()
            if eos in new:
                new = new[: new.index(eos)]
            text = str(self.tokenizer.decode(new, skip_special_tokens=True))
            prompt_tokens = int(inputs["attention_mask"][row].sum())
            results.append(Generation(text, prompt_tokens, len(new), clock.timings(swap_s)))
        return results

    # --- tokens and logits ------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return text_ids(self.tokenizer, text, special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens))).replace("\ufffd", "")

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        return chat_ids(self.tokenizer, messages)

    def logits(self, tokens: str | Sequence[int], adapters: Adapters = (), first: int = 0) -> Any:
        ids = self.tokenize(tokens, special=True) if isinstance(tokens, str) else list(tokens)
        target = self._resolve(adapters)
        with self._lock:
            self._cache.ensure(target)
            if target:
                self._configure(target)
            with self._scope([target]):
                return forward_logits(self._runner(), ids, first)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**super().stats(), "device": self.device, "quantized": self.quantized,
                    **self._cache.stats()}


class _Clock:
    """A generation streamer that timestamps the prompt pass and every token, forwarding them."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def put(self, value: Any) -> None:
        self.stamps.append(time.perf_counter())
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()

    def timings(self, swap_s: float) -> dict[str, float]:
        # stamps[0] is the prompt being handed over, stamps[1] the first new token
        first = self.stamps[1] if len(self.stamps) > 1 else self.start
        last = self.stamps[-1] if self.stamps else self.start
        steps = max(len(self.stamps) - 2, 0)
        gen_s = last - first
        return {"swap": swap_s * 1000, "prompt": (first - self.start) * 1000,
                "generation": gen_s * 1000,
                "tokens_per_s": steps / gen_s if steps and gen_s > 0 else 0.0}


def _load_model(folder: Any, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model: Any

    try:
        if device == "cuda":
            import transformers

            bnb: Any = transformers.BitsAndBytesConfig
            quant = bnb(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_use_double_quant=True,
                                       bnb_4bit_compute_dtype=torch.bfloat16)
            model = AutoModelForCausalLM.from_pretrained(
                str(folder), quantization_config=quant, device_map={"": 0}, dtype=torch.bfloat16)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"transformers could not load the base model from {folder} ({exc}); "
                         "delete that folder so Rune derives it again.") from exc
    model.eval()
    return model
