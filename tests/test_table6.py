"""Table 6's Average is the report's: exp of the mean domain loss (geometric mean of the
domains' perplexities), checked on the rows the Skywork report prints.

The rows are copied from the Skywork repository's README_EN.md (SkyworkAI/Skywork, section
"Documentation Perplexity Evaluation"), the same table as the report's Table 6; the shared
data folder holds the evaluation texts but not the printed table.
"""

import math

import pytest

from skypile.trainer.evaluate import DomainScore, average_ppl, table6

# Tech, Movie, Gov., Game, Finance, General, Average
PRINTED = {
    "MOSS-7B": (20.83, 39.66, 11.08, 31.24, 10.59, 13.25, 18.50),
    "InternLM-7B": (13.43, 24.90, 5.88, 19.78, 6.17, 8.10, 11.17),
    "Qwen-7B": (13.39, 25.16, 5.55, 19.26, 5.76, 7.78, 10.83),
    "Baichuan2-7B": (12.89, 23.26, 5.34, 18.36, 5.68, 7.62, 10.41),
    "LLaMA2-13B": (23.26, 50.66, 18.09, 32.52, 14.85, 16.55, 23.54),
    "Xverse-13B": (12.55, 23.49, 5.20, 17.69, 5.54, 7.46, 10.19),
    "Baichuan-13B": (12.38, 22.46, 5.21, 17.59, 5.42, 7.37, 10.03),
    "Baichuan2-13B": (12.14, 21.85, 5.05, 17.15, 5.35, 7.24, 9.81),
    "Qwen-14B": (11.90, 22.43, 4.89, 16.94, 5.24, 7.03, 9.67),
    "InternLM-20B": (12.34, 22.06, 5.75, 17.45, 5.73, 7.78, 10.34),
    "Aquila2-34B": (14.62, 29.09, 5.72, 21.78, 5.83, 8.45, 11.73),
    "Skywork-13B-Base": (11.58, 21.84, 4.76, 17.28, 4.92, 6.82, 9.42),
}


@pytest.mark.parametrize("model", PRINTED)
def test_average_reproduces_the_printed_row(model):
    *ppl, printed = PRINTED[model]
    # the domain values are printed to 2 decimals: the Average must lie in what they allow
    low = average_ppl([p - 0.005 for p in ppl])
    high = average_ppl([p + 0.005 for p in ppl])
    assert low - 0.005 <= printed <= high + 0.005
    assert round(average_ppl(ppl), 2) == pytest.approx(printed, abs=0.011)
    assert abs(sum(ppl) / len(ppl) - printed) > 0.5  # the arithmetic mean does not


def test_table6_avg_column_is_exp_of_the_mean_domain_loss():
    ppl = dict(zip(("tech", "movie", "gov", "game", "finance", "general"), PRINTED["Skywork-13B-Base"]))
    scores = [DomainScore(model="skywork", domain=d, docs=1, tokens=101, predicted=100, truncated=0,
                          nll_sum=100 * math.log(p)) for d, p in ppl.items()]
    header, [row] = table6(scores)
    assert header[-1] == "avg" and row[0] == "skywork"
    assert round(row[-1], 2) == 9.42
    mean_loss = sum(s.loss for s in scores) / len(scores)
    assert row[-1] == pytest.approx(math.exp(mean_loss), rel=1e-12)
