"""The assistant: the local HTTP service the procurement platform's web pages talk to.

The second face of the library, beside the CLI: it only checks who is asking
(Host, Origin, pairing token, the user's approval), calls tokenkeys.services and
renders JSON. Every rule stays in the services. See docs/assistant.md.
"""
