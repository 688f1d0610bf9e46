"""The real default model end to end: it answers, it embeds sensibly, the seed snippet runs."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_capital_of_france(default_lm):
    result = default_lm.chat(
        [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=32
    )
    assert "Paris" in result.text
    assert result.completion_tokens > 0 and result.prompt_tokens > 10


def test_stream_matches_chat(default_lm):
    messages = [{"role": "user", "content": "Name a primary colour."}]
    assert (
        "".join(default_lm.stream_chat(messages, max_new_tokens=16))
        == default_lm.chat(messages, max_new_tokens=16).text
    )


def test_paraphrase_scores_above_unrelated(default_lm):
    a, para, other = default_lm.encode(
        [
            "A man is playing a guitar.",
            "Someone is playing an instrument.",
            "The stock market fell sharply today.",
        ]
    )
    assert float(a @ para) > float(a @ other)


def test_answer_reuses_cache_with_same_output(default_lm, tmp_path):
    from egtlm_core import EgtLM
    from egtlm_core.cache import DiskTier, MemoryTier, TieredStore

    # float32: one reused document is exact there; bfloat16 rounds the spliced states differently from
    # one full prefill, so greedy answers may part on a near tie (docs/guide_langchain.md: 21/30 same).
    lm = EgtLM(torch_dtype="float32", cache_store=TieredStore([MemoryTier(), DiskTier(tmp_path)]))
    doc = (
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It is 330 metres tall and was "
        "built from 1887 to 1889 for the World's Fair."
    )
    fast = lm.answer("How tall is the Eiffel Tower?", documents=[doc], max_new_tokens=24)
    full = lm.answer("How tall is the Eiffel Tower?", documents=[doc], max_new_tokens=24, reuse_cache=False)
    assert fast.reused_tokens > 0
    assert fast.text == full.text
    assert "330" in fast.text


def test_seed_usage_snippet_runs(capsys):
    """EGTLM's README usage verbatim, but for the import, the model path and transformers 5's dict return."""
    from egtlm_core.loading.default_model import ensure_default_model

    model_path = str(ensure_default_model())
    # ---- begin seed snippet ----
    from scipy.spatial.distance import cosine
    from tqdm import tqdm

    from egtlm_core import EgtLM

    model = EgtLM(model_path, mode="unified", torch_dtype="auto", attn_implementation="eager")

    messages_list = [
        [{"role": "user", "content": "请帮我写一首李白的诗"}],
        [{"role": "user", "content": "多少岁才能够算成年？"}],
        [{"role": "user", "content": "请帮我写一个睡前小故事，来安慰我的宝宝睡觉。"}],
        [{"role": "user", "content": "请问中国有多少个朝代？"}],
    ]

    def egtlm_instruction(instruction):
        return "<|user|>\n" + instruction + "\n<|embed|>\n" if instruction else "<|embed|>\n"

    for messages in tqdm(messages_list):
        print("Query:\n", messages[0]["content"])

        encoded = model.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=True,
            return_tensors="pt",
        )
        encoded = encoded.to(model.device)
        gen = model.model.generate(**encoded, max_new_tokens=256, do_sample=False)
        decoded = model.tokenizer.batch_decode(gen)
        print("Answer:\n")
        print(decoded[0], "\n====================\n")

    queries = ["请告诉我比特币是怎样运作的？", "请问美国有多少年的发展历史？"]
    documents = [
        "纯粹的点对点电子现金可以让在线支付直接从一方发送到另一方，而无需通过金融机构。数字签名提供了部分解决"
        "方案，但如果仍然需要一个可信的第三方来防止双重消费，则会失去主要的好处。我们提出了一种利用点对点网络"
        "解决双重消费问题的方案。网络通过将交易散列到一个持续的基于散列的工作证明链中来为交易打上时间戳，这样"
        "就形成了一个记录，如果不重做工作证明，就无法更改该记录。最长的链不仅可以证明所见证的事件顺序，还可以"
        "证明它来自最大的 CPU 能力池。只要大部分 CPU 能力由不合作攻击网络的节点控制，它们就能生成最"
        "长的链，并超越攻击者。网络本身的结构要求极低。信息在尽最大努力的基础上进行广播，节点可以随意离开和重"
        "新加入网络，并接受最长的工作证明链作为它们离开时发生的事情的证明。",
        "美国作为一个独立国家的历史可以追溯到1776年7月4日,当时美国十三个殖民地通过《独立宣言》正式脱离"
        "英国统治,宣布独立。因此,从1776年独立宣言签署算起,到2023年,美利坚合众国已经有247年的历"
        "史。不过,如果从欧洲人最早在北美洲定居开始算起,美国的历史可以追溯到1607年,当时英国人在今日维尔"
        "jinnia州的詹姆斯敦建立了第一个永久性英国殖民地。从1607年算起,到2023年,美国的历史已经"
        "超过415年了。当然,在欧洲人到来之前,北美洲大陆上已经有众多印第安人部落生活了数千年。所以从更广阔"
        "的视角来看,美国这片土地上的人类历史可以追溯到更加悠久的时期。总的来说,作为一个国家,美国有247年"
        "的独立历史;作为一片土地上的人类文明,美国的历史可以追溯到早于欧洲人到来的印第安人时期,时间跨度超过"
        "數千年。",
    ]

    d_rep, d_cache = model.encode(documents, instruction=egtlm_instruction(""), get_cache=True)
    q_rep = model.encode(queries, instruction=egtlm_instruction(""))

    sims = {q: [1 - cosine(q_rep[i], d_rep[j]) for j in range(len(d_rep))] for i, q in enumerate(queries)}

    print(sims)
    # ---- end seed snippet ----
    out = capsys.readouterr().out
    assert out.count("Answer:") == 4 and "<|im_start|>assistant" in out
    assert d_rep.shape == (2, 576) and q_rep.shape == (2, 576)
    assert len(d_cache) == 2 and all(c.get_seq_length() > 10 for c in d_cache)
    assert all(len(v) == 2 and np.isfinite(v).all() for v in sims.values())
