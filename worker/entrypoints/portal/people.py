"""The demo login's people and whom each may act for (the portal's representation register).

A real portal learns this from ID-porten and the national registers; the demo has a fixed
list. The names and synthetic fødselsnumre (month + 80) are those of `timebok demo`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mappers.model import Person


@dataclass(frozen=True)
class Represented:
    """Someone the logged-in person may book for, and on what grounds (`requester.relation`)."""

    person: Person
    relation: str  # parental_responsibility | guardian | power_of_attorney


@dataclass(frozen=True)
class User:
    """A person who can log in to the demo, with the people they represent."""

    key: str  # what the session cookie holds (never the fødselsnummer)
    person: Person
    represents: tuple[Represented, ...] = ()

    def subject(self, index: int) -> Person:
        """Whom a page is about: 0 = the user, n = the n-th represented person."""
        if index == 0:
            return self.person
        return self.represents[index - 1].person

    def relation(self, index: int) -> str:
        """The relation for `index` (`self` for the user)."""
        return "self" if index == 0 else self.represents[index - 1].relation

    def valid(self, index: int) -> bool:
        """`index` names the user or someone they represent."""
        return 0 <= index <= len(self.represents)


KARI = Person("14838510036", "Kari", "Nordmann")
OLA = Person("02868011028", "Ola", "Nordmann")
EMMA = Person("23891951000", "Emma", "Nordmann")
PER = Person("17854110047", "Per", "Hansen")

USERS: tuple[User, ...] = (
    User("kari", KARI, (Represented(PER, "power_of_attorney"),)),
    User("ola", OLA, (Represented(EMMA, "parental_responsibility"),)),
)


def user(key: str | None) -> User | None:
    """The demo user with this key, if any."""
    return next((u for u in USERS if u.key == key), None)
