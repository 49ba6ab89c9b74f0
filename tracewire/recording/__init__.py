"""Recording: live spans and traces, the fluent and client APIs, head sampling."""
