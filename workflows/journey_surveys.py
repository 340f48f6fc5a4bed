"""The satisfaction and support questionnaire a journey sends: at step-down, at completion
or discharge, and in aftercare (month 3), each once per episode, as a signed link through
the outbox (the activity makes the survey, its token and the message in one write).

Journeys whose run began before the patch `support-surveys`, and programs without a
questionnaire, send none."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import SurveyIssue
    from clinical.phases import Phase
    from clinical.surveys import Occasion, aftercare_due, sent_at_end, survey_key
    from workflows.journey_groups import JourneyGroups


class JourneySurveys(JourneyGroups):
    _support_surveys: bool
    """Whether this run sends questionnaires (decided first thing in the run)."""

    async def _send_survey(self, occasion: Occasion) -> None:
        st = self._state
        config = st.protocol.survey
        sent = f"E{st.episode}-{occasion}"
        if not self._support_surveys or config is None or sent in st.surveys_sent:
            return
        # The group the questionnaire speaks of: the track of the phase ending, if any.
        track = st.group_tracks.get(st.phase.value) or next(iter(st.group_tracks.values()), None)
        reminders = st.assessment.contact_window.reminders
        await self._store(
            CareOperations.issue_survey,
            SurveyIssue(
                key=survey_key(st.patient_id, st.episode, occasion),
                patient_id=st.patient_id,
                program_id=st.program_id,
                site_id=st.site_id,
                track_id=track,
                occasion=occasion,
                episode=st.episode,
                at=workflow.now(),
                link_days=config.link_days,
                channel="sms" if reminders == "none" else reminders,
            ),
        )
        st.surveys_sent = [*st.surveys_sent, sent]

    async def _send_aftercare_survey(self) -> None:
        st = self._state
        config = st.protocol.survey
        if config is None or st.aftercare_start_day is None:
            return
        if aftercare_due(config, self._today() - st.aftercare_start_day):
            await self._send_survey("aftercare")

    async def _end(self, outcome: Phase, reason: str) -> None:
        if sent_at_end(outcome.value):
            await self._send_survey("end")
        await super()._end(outcome, reason)
