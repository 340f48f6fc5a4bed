"""The care-operations store: patients, sessions, follow-up calls, case-manager tasks,
referrals, consents, site closures, group seats and waitlists, counsellors' calendars,
satisfaction and support surveys, the notifications outbox and the audit trail.

A repository: everything outside reads and writes through `CareStore`'s methods, named for
what the clinic does, with typed inputs and results; the tables are private to this package
(`_schema`). Every write an activity makes carries an idempotency key with a unique
constraint, so a retried activity can never book, call, notify or audit twice: the database
refuses it. SQLite is the embedded default; the same code runs on PostgreSQL (SQLAlchemy
Core)."""

from infra.store._core import StoreRefused, store_unreachable, utcnow
from infra.store._schema import SCHEMA_VERSION
from infra.store.audit import AuditFact, AuditTrail
from infra.store.calls import CallAttempt, CallRecords
from infra.store.closures import ClosureRecords
from infra.store.consents import ConsentEntry, ConsentRecords
from infra.store.counsellors import CounsellorRecords, CounsellorSession
from infra.store.delivery import DeadLetter, DeliveryContact, DeliveryQueue, DueMessage
from infra.store.disclosures import DISCLOSED_TO_PARTNER, Disclosure, DisclosureRecords
from infra.store.events import CareEvent, StoredEvent
from infra.store.family import FamilyContactRecords
from infra.store.groups import GroupSeatRecords, RosterLine, SeatGiven, WaitlistEntry
from infra.store.outbox import Outbox, OutboxMessage
from infra.store.patients import EnrolledPatient, NewPatient, PatientRecords, PhaseChangeEntry
from infra.store.queries import CaseloadEntry, ClinicQueries, CohortFacts
from infra.store.referrals import NewReferral, PartnerContact, ReferralEntry, ReferralRecords
from infra.store.sessions import AttendanceMark, CareEventFacts, SessionAppointment, SessionRecords
from infra.store.subscribers import (
    DueDelivery,
    FailedDelivery,
    Subscriber,
    SubscriberRecords,
    SubscriberRefused,
)
from infra.store.surveys import NewSurvey, SurveyRecord, SurveyRecords
from infra.store.tasks import InboxTask, NewTask, TaskClosing, TaskRecords


class CareStore(
    ClinicQueries,
    PatientRecords,
    SessionRecords,
    CallRecords,
    TaskRecords,
    ReferralRecords,
    ConsentRecords,
    ClosureRecords,
    GroupSeatRecords,
    CounsellorRecords,
    Outbox,
    DeliveryQueue,
    DisclosureRecords,
    SubscriberRecords,
    FamilyContactRecords,
    SurveyRecords,
    AuditTrail,
):
    """The store, one engine: `CareStore(url, pool_size, keys)`, `migrate()` once by a
    worker, then the clinic's writes and reads (see each repository module)."""


__all__ = [
    "DISCLOSED_TO_PARTNER",
    "SCHEMA_VERSION",
    "AttendanceMark",
    "AuditFact",
    "CallAttempt",
    "CareEvent",
    "CareEventFacts",
    "CareStore",
    "CaseloadEntry",
    "CohortFacts",
    "ConsentEntry",
    "CounsellorSession",
    "DeadLetter",
    "DeliveryContact",
    "Disclosure",
    "DueDelivery",
    "DueMessage",
    "EnrolledPatient",
    "FailedDelivery",
    "InboxTask",
    "NewPatient",
    "NewReferral",
    "NewSurvey",
    "NewTask",
    "OutboxMessage",
    "PartnerContact",
    "PhaseChangeEntry",
    "ReferralEntry",
    "RosterLine",
    "SeatGiven",
    "SessionAppointment",
    "StoreRefused",
    "StoredEvent",
    "Subscriber",
    "SubscriberRefused",
    "SurveyRecord",
    "TaskClosing",
    "WaitlistEntry",
    "store_unreachable",
    "utcnow",
]
