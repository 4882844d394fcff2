"""The type of a JSON object as charrnn reads and writes them (meta.json, the training record, a
metrics line, an API request's body): its values are whatever the JSON held until the code that
uses them checks them, so they are typed Any here, and only here."""

from __future__ import annotations

from typing import Any

JSONObject = dict[str, Any]
