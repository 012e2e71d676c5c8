"""Namespaces, code-system OIDs and code lists of the KITH message family, in one place."""

from __future__ import annotations

from enum import StrEnum

NS_MSGHEAD = "http://www.kith.no/xmlstds/msghead/2006-05-24"
NS_DIALOG = "http://www.kith.no/xmlstds/dialog/2013-01-23"
# Dialogmelding's Ident children (Id, TypeId) are declared in felleskomponent1, so they live in
# that namespace: <Ident><fk1:Id>..</fk1:Id><fk1:TypeId ../></Ident>.
NS_FK1 = "http://www.kith.no/xmlstds/felleskomponent1"
NS_XCAL = "urn:ietf:params:xml:ns:icalendar-2.0"
NS_RELATION = "http://www.kith.no/xmlstds/pasientrelasjon/2014-03-28"
NS_APPREC_10 = "http://www.kith.no/xmlstds/apprec/2004-11-21"
NS_APPREC_11 = "http://www.kith.no/xmlstds/apprec/2012-02-15"

MIG_MSGHEAD = "v1.2 2006-05-24"
MIG_APPREC_10 = "1.0 2004-11-21"
MIG_APPREC_11 = "v1.1 2012-02-15"

OID_HER = "2.16.578.1.12.4.1.1.9051"  # HER-id (communication party)
OID_FNR = "2.16.578.1.12.4.1.1.8116"  # person identifier types (FNR / DNR)
OID_HPR = "2.16.578.1.12.4.1.1.8116"  # HPR number uses the same identifier-type list
OID_REQUEST = "2.16.578.1.12.4.1.1.7601"  # Foresporsel/TypeForesp
OID_REPLY = "2.16.578.1.12.4.1.1.7602"  # Notat/TemaKodet
OID_RELATION = "2.16.578.1.12.4.1.1.7611"  # Pasientrelasjon/Relasjon
OID_APPOINTMENT_TYPE = "2.16.578.1.12.4.1.1.7617"  # Timetype innbyggerportal
OID_APPREC_STATUS = "2.16.578.1.12.4.1.1.8258"
OID_APPREC_ERROR = "2.16.578.1.12.4.1.1.8221"


class Process(StrEnum):
    """MsgHead MsgInfo/Type V: the message process a conversation belongs to."""

    RESERVATION = "DIALOG_INNBYGGER_TIMERESERVASJON"  # reserve / cancel a slot
    WISH = "DIALOG_INNBYGGER_TIMEONSKE"  # appointment wishes
    CANCELLATION = "DIALOG_INNBYGGER_AVTALEAVBESTILLING"  # cancel an appointment
    PUBLICATION = "DIALOG_INNBYGGER_AVTALEUTSENDING"  # clinic publishes an appointment
    APPREC = "APPREC"  # application receipt (AppRec root, not MsgHead)


PROCESS_NAMES: dict[Process, str] = {
    Process.RESERVATION: "Dialog med innbygger - timereservasjon",
    Process.WISH: "Dialog med innbygger - timeønske",
    Process.CANCELLATION: "Dialog med innbygger - avtaleavbestilling",
    Process.PUBLICATION: "Dialog med innbygger - avtaleutsending",
    Process.APPREC: "Applikasjonskvittering",
}

# Address-registry process names (registry TOML `processes`) per MsgHead process.
REGISTRY_PROCESS: dict[Process, str] = {
    Process.RESERVATION: "timereservasjon",
    Process.WISH: "timeonske",
    Process.CANCELLATION: "avtaleavbestilling",
    Process.PUBLICATION: "avtaleutsending",
}


class RequestCode(StrEnum):
    """Code list 7601: the function of a Foresporsel."""

    RESERVE = "RT"  # Reserver time
    CANCEL = "ART"  # Avbestill reservert time
    CHANGE = "ERT"  # Endre reservert time
    LIST_FREE = "HLT"  # Hent ledige timer
    LIST_BOOKED = "HBT"  # Hent bestilte timer
    APPOINTMENT = "MOA"  # Melding om avtale (clinic-originated Avtale)
    WISH = "OT"  # Ønske om time
    WISH_CHANGE = "OET"  # Ønske om endring av time
    WISH_CANCEL = "OAT"  # Ønske om avbestilling av time


REQUEST_NAMES: dict[RequestCode, str] = {
    RequestCode.RESERVE: "Reserver time",
    RequestCode.CANCEL: "Avbestill reservert time",
    RequestCode.CHANGE: "Endre reservert time",
    RequestCode.LIST_FREE: "Hent ledige timer",
    RequestCode.LIST_BOOKED: "Hent bestilte timer",
    RequestCode.APPOINTMENT: "Melding om avtale",
    RequestCode.WISH: "Ønske om time",
    RequestCode.WISH_CHANGE: "Ønske om endring av time",
    RequestCode.WISH_CANCEL: "Ønske om avbestilling av time",
}


class ReplyCode(StrEnum):
    """Code list 7602: the outcome carried in Notat/TemaKodet of a reply."""

    CONFIRMED = "05"  # Timereservasjon bekreftet
    NOT_AVAILABLE = "06"  # Time ikke tilgjengelig
    CHANGE_CONFIRMED = "07"  # Endring av time bekreftet
    CANCEL_CONFIRMED = "08"  # Avbestilling av time bekreftet
    CANCEL_REFUSED = "09"  # Time kunne ikke avbestilles
    CONFIRMED_OTHER = "10"  # Timereservasjon hos annen behandler bekreftet
    REJECTED = "26"  # Forespørsel avvist
    NO_ACCESS = "30"  # Ikke tilgang
    GENERAL_ERROR = "31"  # Generell feil
    NOT_OFFERED = "33"  # Tjeneste tilbys ikke
    CHANGE_REFUSED = "34"  # Time kunne ikke endres
    LISTING = "01"  # [our choice] the answer to a lookup: the slots or appointments found


REPLY_NAMES: dict[ReplyCode, str] = {
    ReplyCode.CONFIRMED: "Timereservasjon bekreftet",
    ReplyCode.NOT_AVAILABLE: "Time ikke tilgjengelig",
    ReplyCode.CHANGE_CONFIRMED: "Endring av time bekreftet",
    ReplyCode.CANCEL_CONFIRMED: "Avbestilling av time bekreftet",
    ReplyCode.CANCEL_REFUSED: "Time kunne ikke avbestilles",
    ReplyCode.CONFIRMED_OTHER: "Timereservasjon hos annen behandler bekreftet",
    ReplyCode.REJECTED: "Forespørsel avvist",
    ReplyCode.NO_ACCESS: "Ikke tilgang",
    ReplyCode.GENERAL_ERROR: "Generell feil",
    ReplyCode.NOT_OFFERED: "Tjeneste tilbys ikke",
    ReplyCode.CHANGE_REFUSED: "Time kunne ikke endres",
    ReplyCode.LISTING: "Oversikt over timer",
}


class RelationCode(StrEnum):
    """Code list 7611: how the acting person relates to the patient."""

    PARENT = "FO"  # Foreldreansvar
    GUARDIAN = "VE"  # Vergemål
    POWER_OF_ATTORNEY = "FU"  # Fullmakt
    ASSIGNED_POWER = "TD"  # Tildelt fullmakt


RELATION_NAMES: dict[RelationCode, str] = {
    RelationCode.PARENT: "Foreldreansvar",
    RelationCode.GUARDIAN: "Vergemål",
    RelationCode.POWER_OF_ATTORNEY: "Fullmakt",
    RelationCode.ASSIGNED_POWER: "Tildelt fullmakt",
}


class AppointmentType(StrEnum):
    """Code list 7617 (Timetype innbyggerportal), the subset timebok books: the codes are words."""

    ORDINARY = "Ordinær"  # ordinary, in person
    URGENT = "Hastetime"  # urgent
    VIDEO = "Video"  # video consultation
    PHONE = "Telefon"  # [our choice] the published list has no code for a phone appointment


APPOINTMENT_TYPE_NAMES: dict[AppointmentType, str] = {
    AppointmentType.ORDINARY: "Ordinær",
    AppointmentType.URGENT: "Hastetime",
    AppointmentType.VIDEO: "Video",
    AppointmentType.PHONE: "Telefon",
}

# The rest of the published list: real appointment types timebok reads as "no known type".
OTHER_APPOINTMENT_TYPES = frozenset(
    {"Tidsvindu", "Gruppe", "Vaksine", "Lab", "Koronatest", "Koronavaksine"}
)

# The numeric stand-ins of earlier releases, still read on input for one release.
LEGACY_APPOINTMENT_TYPES: dict[str, AppointmentType] = {
    "1": AppointmentType.ORDINARY,
    "2": AppointmentType.URGENT,
    "3": AppointmentType.VIDEO,
    "4": AppointmentType.PHONE,
}


def appointment_type(code: str) -> AppointmentType | None:
    """A 7617 code read from a message (published, or a legacy numeric one); None when unknown."""
    try:
        return AppointmentType(code.strip())
    except ValueError:
        return LEGACY_APPOINTMENT_TYPES.get(code.strip())


class Urgency(StrEnum):
    """Foresporsel/Hastegrad (a CS with no published list) [our choice]: how soon it is needed."""

    URGENT = "H"  # Haster: the patient asks for an urgent appointment
    NORMAL = "V"  # Vanlig: an ordinary appointment


URGENCY_NAMES: dict[Urgency, str] = {
    Urgency.URGENT: "Haster",
    Urgency.NORMAL: "Vanlig",
}

# Foresporsel/Formål [our choice]: the wanted service, coded with the contract's own values
# (no published code list fits); DN gives the Norwegian name.
SERVICE_NAMES: dict[str, str] = {
    "consultation": "Konsultasjon",
    "lab_test": "Laboratorieprøve",
    "vaccination": "Vaksinasjon",
    "other": "Annet",
}


class AppRecStatus(StrEnum):
    """Code list 8258: the status of an application receipt."""

    OK = "1"  # OK
    REJECTED = "2"  # Avvist
    OK_WITH_ERROR = "3"  # OK, feil i delmelding


APPREC_STATUS_NAMES: dict[AppRecStatus, str] = {
    AppRecStatus.OK: "OK",
    AppRecStatus.REJECTED: "Avvist",
    AppRecStatus.OK_WITH_ERROR: "OK, feil i delmelding",
}


class AppRecError(StrEnum):
    """Code list 8221: why a message was rejected (selection)."""

    INVALID_MSG_ID = "E10"  # Ugyldig meldingsidentifikator
    PRACTITIONER_UNKNOWN = "E20"  # Lege finnes ikke
    RECEIVER_UNKNOWN = "E21"  # Mottaker finnes ikke
    PATIENT_FNR_MISSING = "E30"  # Pasientens fødselsnummer mangler
    PATIENT_FNR_WRONG = "E31"  # Pasientens fødselsnummer er feil
    PATIENT_UNKNOWN = "E35"  # Pasienten finnes ikke i mottakersystemet
    PATIENT_DATA_MISSING = "E36"  # Ufullstendige pasientopplysninger
    NOT_XML = "T01"  # Ikke XML / ikke "well formed"
    NOT_VALID = "T02"  # XML validerer ikke
    UNSUPPORTED = "T10"  # Støtter ikke meldingsformatet
    FORMAT_OTHER = "T99"  # Annen feil på format
    OTHER = "X99"  # Annen feil


APPREC_ERROR_NAMES: dict[AppRecError, str] = {
    AppRecError.INVALID_MSG_ID: "Ugyldig meldingsidentifikator",
    AppRecError.PRACTITIONER_UNKNOWN: "Lege finnes ikke",
    AppRecError.RECEIVER_UNKNOWN: "Mottaker finnes ikke",
    AppRecError.PATIENT_FNR_MISSING: "Pasientens fødselsnummer mangler",
    AppRecError.PATIENT_FNR_WRONG: "Pasientens fødselsnummer er feil",
    AppRecError.PATIENT_UNKNOWN: "Pasienten finnes ikke i mottakersystemet",
    AppRecError.PATIENT_DATA_MISSING: "Ufullstendige pasientopplysninger",
    AppRecError.NOT_XML: 'Ikke XML / ikke "well formed"',
    AppRecError.NOT_VALID: "XML validerer ikke",
    AppRecError.UNSUPPORTED: "Støtter ikke meldingsformatet",
    AppRecError.FORMAT_OTHER: "Annen feil på format",
    AppRecError.OTHER: "Annen feil",
}


# Ident/TypeId values (code list 8116 for persons, 9051 for HER) and their display names.
ID_HER = "HER"
ID_HPR = "HPR"
ID_FNR = "FNR"
ID_DNR = "DNR"

ID_TYPE_NAMES: dict[str, str] = {
    ID_HER: "HER-id",
    ID_HPR: "HPR-nummer",
    ID_FNR: "Fødselsnummer",
    ID_DNR: "D-nummer",
}


class Function(StrEnum):
    """The business functions of the booking dialogue, by their Helsenorge names."""

    RESERVE = "ReserverAvtale"  # portal -> EPJ: reserve a free slot
    CANCEL = "AvbestillAvtale"  # portal -> EPJ: cancel a reservation / appointment
    WISH = "OnskeReserver"  # portal -> EPJ: ask for an appointment
    WISH_CHANGE = "OnskeEndring"  # portal -> EPJ: ask to change an appointment
    WISH_CANCEL = "OnskeAvbestill"  # portal -> EPJ: ask to cancel an appointment
    RESERVATION_REPLY = "SvarAvtaleReservasjon"  # EPJ -> portal: answer to a reservation
    WISH_REPLY = "SvarOnske"  # EPJ -> portal: answer to a wish
    CANCELLATION_REPLY = "SvarAvbestilling"  # EPJ -> portal: answer to a cancellation
    APPOINTMENT = "Avtale"  # EPJ -> portal: appointment booked / changed / cancelled at the clinic
    LIST_FREE = "HentLedigeTimer"  # portal -> EPJ, synchronous: free slots in a period
    LIST_FREE_REPLY = "SvarLedigeTimer"  # EPJ -> portal, synchronous: the free slots
    LIST_PLANNED = "HentPlanlagteTimer"  # portal -> EPJ, synchronous: a patient's appointments
    LIST_PLANNED_REPLY = "SvarPlanlagteTimer"  # EPJ -> portal, synchronous: those appointments
