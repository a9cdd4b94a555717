"""LLM serving and calling: the tiny local model, the vLLM server, prompts, parsers and the async client.

Nothing here is specific to one stage: annotate (quality, topics) and rewrite share the client, the
prompt loader and the server manager.
"""
