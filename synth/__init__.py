"""Synthetic data: WRAP rephrasing (prompts, chunks, clean-up), the LLM backends that answer it
(any OpenAI-compatible server, or a local `transformers` model) and the answer cache. Never
imports Spark, Prefect, pipelines or flows: `pipelines/rephrase.py` runs `synth.engine` inside
Spark tasks."""
