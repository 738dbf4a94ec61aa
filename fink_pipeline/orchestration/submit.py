"""Submitting a transfer from the Dagster launchpad: the request form and the submit op.

`TransferRequestConfig` shows the request's fields (with their defaults and descriptions) as the
launchpad form. It declares the fields only: the request is validated by the very function the
CLI uses (`request_from_mapping`, then `plan_transfer` against the archive), so a bad form fails
the run at once with the CLI's message. The op names the topic, stores the request, adds the
transfer's dynamic partition and tags its run with the topic; `submitted_transfer_sensor` then
launches `transfer_job` on that partition.
"""


import dagster as dg
from pydantic import Field

from fink_pipeline.archive.layout import list_nights
from fink_pipeline.kafka.topics import list_topics
from fink_pipeline.orchestration.constants import TOPIC_TAG
from fink_pipeline.orchestration.partitions import transfer_partitions
from fink_pipeline.orchestration.resources import ArchiveResource, KafkaResource, RequestStoreResource
from fink_pipeline.transfer.plan import pin_catalog, plan_transfer
from fink_pipeline.transfer.request import TransferRequestFields, request_from_mapping


def _described(name: str) -> str | None:
    return TransferRequestFields.model_fields[name].description


class TransferRequestConfig(dg.Config):
    """The launchpad form of a transfer request (same fields as `TransferRequestFields`)."""

    survey: str = Field(default="ztf", description=_described("survey"))
    start: str = Field(description=_described("start"))
    stop: str = Field(description=_described("stop"))
    classes: list[str] = Field(default=[], description=_described("classes"))
    filters: list[str] = Field(default=[], description=_described("filters"))
    blocks: list[str] = Field(default=[], description=_described("blocks"))
    conditions: list[str] = Field(default=[], description=_described("conditions"))
    content: list[str] = Field(
        default=[], description="Empty: the survey's default (light packet; objectId, candid for a ZTF "
        "cross-match). " + _described("content"))
    limit: int | None = Field(default=None, description=_described("limit"))
    catalog_filename: str | None = Field(default=None, description=_described("catalog_filename"))
    ra_col: str = Field(default="ra", description=_described("ra_col"))
    dec_col: str = Field(default="dec", description=_described("dec_col"))
    id_col: str = Field(default="id", description=_described("id_col"))
    radius_arcsec: float | None = Field(default=None, description=_described("radius_arcsec"))
    radius_col: str | None = Field(default=None, description=_described("radius_col"))


@dg.op(description="Validate the request like the CLI, name its topic, store it and add its partition.")
def submit_transfer(
    context: dg.OpExecutionContext,
    config: TransferRequestConfig,
    archive: ArchiveResource,
    kafka: KafkaResource,
    requests: RequestStoreResource,
) -> str:
    """Returns the topic; the run is tagged `fink/topic` so the sensor can launch the transfer."""
    try:
        form = config.model_dump()
        if not form["content"]:
            del form["content"]  # the survey's default, as when a request file has no content
        request = request_from_mapping(form)
        plan = plan_transfer(request, archive.uri, list_nights(archive.uri, request.survey))
    except ValueError as exc:  # RequestError and friends: the CLI prints exactly this message
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    store = requests.store()
    request = pin_catalog(request, plan).with_identity(list_topics(kafka.settings()) + store.topics())
    store.save(request)
    context.instance.add_dynamic_partitions(transfer_partitions.name, [request.topic])
    context.instance.add_run_tags(context.run_id, {TOPIC_TAG: request.topic})
    context.add_output_metadata(
        {
            "topic": request.topic,
            "nights_present": len(plan.night_paths),
            "nights_missing": [n.isoformat() for n in plan.missing_nights],
            "request": dg.MetadataValue.json(request.model_dump(mode="json")),
            **({"catalog": plan.crossmatch.description, "catalog_sha256": plan.crossmatch.sha256}
               if plan.crossmatch is not None else {}),
        }
    )
    context.log.info(f"Submitted {request.topic}: the transfer run starts on the next sensor tick")
    return request.topic


@dg.job(
    description="Submit a transfer from the launchpad: fill in the request, launch; the transfer run follows.",
    tags={"fink/kind": "submit"},
)
def submit_transfer_job():
    submit_transfer()
