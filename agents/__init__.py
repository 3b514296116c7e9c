"""The cast: teacher, student and judge agents, and the model clients they speak through.

Model clients (each an autogen `ChatCompletionClient`, so `AssistantAgent` can stream through it):

    litellm_client.LiteLLMChatClient   any litellm model: a hosted API or a local OpenAI-compatible server
    llama_local.LlamaCppChatClient     a GGUF model in-process through llama.cpp (the student, with LoRA)
    llama_server.ServerPool            managed llama.cpp servers for local teacher and judge models
    scripted.ScriptedChatClient        canned replies for unit tests: the only fake

This package imports nothing on purpose: litellm, llama_cpp and autogen load only where they are used.
"""
