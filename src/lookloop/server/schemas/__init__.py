"""The HTTP API's request and response models (pydantic), one module per part of the API.

They are the wire format only: the database tables live in each layer's ``tables.py`` and the value objects
in ``lookloop.domain``; each ``…Out.of(x)`` shapes a service's result for the reply. The class names are the
OpenAPI component names, so a name is chosen once and not reused in another module.
"""
