"""ELAsTiCC archive schema: elasticc.v0_9 / v0_9_1 alert fields plus what Fink stores with them.

ELAsTiCC alerts are simulated Rubin alerts (LSSTDESC/elasticc `alert_schema/`). The archive keeps
the union of both published versions (v0_9_1 drops `ccdVisitId`, `parentDiaSourceId`,
`totFlux`/`totFluxErr` and `prvDiaNondetectionLimits`; v0_9 lacks the `*_zphot_p50` host
fields), plus the fields found in Fink's ELAsTiCC Parquet samples:

* `diaSource.nobs`, `diaObject.simVersion` and the 2022 host-galaxy naming
  (`hostgal_z`, `hostgal_zphot_q10`...`q99`) of Fink's `elasticc_sample_seed0` / processed data;
* `brokerIngestTimestamp`, `timestamp` (Fink ingestion; real UTC timestamps here, the transfer
  casts them to strings);
* `classId` (int): the true ELAsTiCC class of the alert's object (taxonomy 111...135, 211...221,
  ...), stored with the curated training alerts; it is the survey's class column (reference 9.2);
* Fink added values of the processed sample: `cdsxmatch`, `pIa` (SN Ia probability) and the
  concatenated light curve used by Fink's classifiers (`cmidPointTai`, `cfilterName`, `cpsFlux`,
  `cpsFluxErr`, `len`).

`year`/`month`/`day` live only in the directory names.
"""

from __future__ import annotations

import pyarrow as pa

from fink_pipeline.surveys.ztf.schema import AVRO_TO_ARROW, struct_of

DIA_SOURCE_SPEC = """
    diaSourceId:long ccdVisitId:long diaObjectId:long parentDiaSourceId:long midPointTai:double
    filterName:string ra:double decl:double psFlux:float psFluxErr:float snr:float nobs:float
"""

DIA_FORCED_SOURCE_SPEC = """
    diaForcedSourceId:long ccdVisitId:long diaObjectId:long midPointTai:double filterName:string
    psFlux:float psFluxErr:float totFlux:float totFluxErr:float
"""

DIA_NONDETECTION_LIMIT_SPEC = """
    ccdVisitId:long midPointTai:double filterName:string diaNoise:float
"""

DIA_OBJECT_SPEC = """
    diaObjectId:long simVersion:string ra:double decl:double mwebv:float mwebv_err:float
    z_final:float z_final_err:float hostgal_ellipticity:float hostgal_sqradius:float
    hostgal_zspec:float hostgal_zspec_err:float hostgal_zphot:float hostgal_zphot_err:float
    hostgal_zphot_q000:float hostgal_zphot_q010:float hostgal_zphot_q020:float
    hostgal_zphot_q030:float hostgal_zphot_q040:float hostgal_zphot_q050:float
    hostgal_zphot_q060:float hostgal_zphot_q070:float hostgal_zphot_q080:float
    hostgal_zphot_q090:float hostgal_zphot_q100:float hostgal_zphot_p50:float hostgal_mag_u:float
    hostgal_mag_g:float hostgal_mag_r:float hostgal_mag_i:float hostgal_mag_z:float
    hostgal_mag_Y:float hostgal_ra:float hostgal_dec:float hostgal_snsep:float
    hostgal_magerr_u:float hostgal_magerr_g:float hostgal_magerr_r:float hostgal_magerr_i:float
    hostgal_magerr_z:float hostgal_magerr_Y:float hostgal2_ellipticity:float hostgal2_sqradius:float
    hostgal2_zspec:float hostgal2_zspec_err:float hostgal2_zphot:float hostgal2_zphot_err:float
    hostgal2_zphot_q000:float hostgal2_zphot_q010:float hostgal2_zphot_q020:float
    hostgal2_zphot_q030:float hostgal2_zphot_q040:float hostgal2_zphot_q050:float
    hostgal2_zphot_q060:float hostgal2_zphot_q070:float hostgal2_zphot_q080:float
    hostgal2_zphot_q090:float hostgal2_zphot_q100:float hostgal2_zphot_p50:float
    hostgal2_mag_u:float hostgal2_mag_g:float hostgal2_mag_r:float hostgal2_mag_i:float
    hostgal2_mag_z:float hostgal2_mag_Y:float hostgal2_ra:float hostgal2_dec:float
    hostgal2_snsep:float hostgal2_magerr_u:float hostgal2_magerr_g:float hostgal2_magerr_r:float
    hostgal2_magerr_i:float hostgal2_magerr_z:float hostgal2_magerr_Y:float hostgal_z:float
    hostgal_z_err:float hostgal_zphot_q10:float hostgal_zphot_q20:float hostgal_zphot_q30:float
    hostgal_zphot_q40:float hostgal_zphot_q50:float hostgal_zphot_q60:float hostgal_zphot_q70:float
    hostgal_zphot_q80:float hostgal_zphot_q90:float hostgal_zphot_q99:float hostgal2_z:float
    hostgal2_z_err:float hostgal2_zphot_q10:float hostgal2_zphot_q20:float hostgal2_zphot_q30:float
    hostgal2_zphot_q40:float hostgal2_zphot_q50:float hostgal2_zphot_q60:float
    hostgal2_zphot_q70:float hostgal2_zphot_q80:float hostgal2_zphot_q90:float
    hostgal2_zphot_q99:float
"""

DIA_SOURCE = struct_of(DIA_SOURCE_SPEC)
DIA_FORCED_SOURCE = struct_of(DIA_FORCED_SOURCE_SPEC)
DIA_NONDETECTION_LIMIT = struct_of(DIA_NONDETECTION_LIMIT_SPEC)
DIA_OBJECT = struct_of(DIA_OBJECT_SPEC)

_T = AVRO_TO_ARROW

ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("alertId", _T["long"]),
        pa.field("diaSource", DIA_SOURCE),
        pa.field("prvDiaSources", pa.list_(DIA_SOURCE)),
        pa.field("prvDiaForcedSources", pa.list_(DIA_FORCED_SOURCE)),
        pa.field("prvDiaNondetectionLimits", pa.list_(DIA_NONDETECTION_LIMIT)),
        pa.field("diaObject", DIA_OBJECT),
        pa.field("cutoutDifference", _T["bytes"]),
        pa.field("cutoutTemplate", _T["bytes"]),
        pa.field("brokerIngestTimestamp", _T["timestamp"]),
        pa.field("timestamp", _T["timestamp"]),
        pa.field("classId", _T["int"]),
        pa.field("cdsxmatch", _T["string"]),
        pa.field("pIa", _T["double"]),
        pa.field("cmidPointTai", pa.list_(_T["double"])),
        pa.field("cfilterName", pa.list_(_T["string"])),
        pa.field("cpsFlux", pa.list_(_T["float"])),
        pa.field("cpsFluxErr", pa.list_(_T["float"])),
        pa.field("len", _T["int"]),
    ]
)

CUTOUT_COLUMNS = ("cutoutDifference", "cutoutTemplate")
