"""The declarative base every plugin table shares."""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Table
from sqlalchemy.orm import DeclarativeBase

from ..db import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime}


#: The source of a timeline line that records how a text was first planned (written when
#: staff plan it again, so its first status is not lost).
PLANNED = "planned"


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)
