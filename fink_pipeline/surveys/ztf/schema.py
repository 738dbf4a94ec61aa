"""ZTF archive schema: ZTF alert 4.02 fields plus the values Fink adds at processing time.

Field lists follow Fink's published Data Transfer schema (reference section 4.3). In the archive
(Parquet) the broker timestamps are real timestamps; the transfer casts them to strings.
"""

from __future__ import annotations

import pyarrow as pa

AVRO_TO_ARROW = {
    "double": pa.float64(),
    "float": pa.float32(),
    "int": pa.int32(),
    "long": pa.int64(),
    "string": pa.string(),
    "bytes": pa.binary(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def struct_of(spec: str) -> pa.StructType:
    """`"name:type name:type ..."` -> Arrow struct (every field nullable, as Spark writes)."""
    pairs = (item.split(":") for item in spec.split())
    return pa.struct([pa.field(name, AVRO_TO_ARROW[kind]) for name, kind in pairs])


# candidate: the 103 fields of the triggering detection (ZTF 4.02)
CANDIDATE_SPEC = """
    jd:double fid:int pid:long diffmaglim:float pdiffimfilename:string programpi:string
    programid:int candid:long isdiffpos:string tblid:long nid:int rcid:int field:int
    xpos:float ypos:float ra:double dec:double magpsf:float sigmapsf:float chipsf:float
    magap:float sigmagap:float distnr:float magnr:float sigmagnr:float chinr:float
    sharpnr:float sky:float magdiff:float fwhm:float classtar:float mindtoedge:float
    magfromlim:float seeratio:float aimage:float bimage:float aimagerat:float
    bimagerat:float elong:float nneg:int nbad:int rb:float ssdistnr:float ssmagnr:float
    ssnamenr:string sumrat:float magapbig:float sigmagapbig:float ranr:double decnr:double
    sgmag1:float srmag1:float simag1:float szmag1:float sgscore1:float distpsnr1:float
    ndethist:int ncovhist:int jdstarthist:double jdendhist:double scorr:double tooflag:int
    objectidps1:long objectidps2:long sgmag2:float srmag2:float simag2:float szmag2:float
    sgscore2:float distpsnr2:float objectidps3:long sgmag3:float srmag3:float simag3:float
    szmag3:float sgscore3:float distpsnr3:float nmtchps:int rfid:long jdstartref:double
    jdendref:double nframesref:int rbversion:string dsnrms:float ssnrms:float dsdiff:float
    magzpsci:float magzpsciunc:float magzpscirms:float nmatches:int clrcoeff:float
    clrcounc:float zpclrcov:float zpmed:float clrmed:float clrrms:float neargaia:float
    neargaiabright:float maggaia:float maggaiabright:float exptime:float drb:float
    drbversion:string
"""


# prv_candidates: the 57 fields of each previous detection or upper limit
PRV_CANDIDATE_SPEC = """
    jd:double fid:int pid:long diffmaglim:float pdiffimfilename:string programpi:string
    programid:int candid:long isdiffpos:string tblid:long nid:int rcid:int field:int
    xpos:float ypos:float ra:double dec:double magpsf:float sigmapsf:float chipsf:float
    magap:float sigmagap:float distnr:float magnr:float sigmagnr:float chinr:float
    sharpnr:float sky:float magdiff:float fwhm:float classtar:float mindtoedge:float
    magfromlim:float seeratio:float aimage:float bimage:float aimagerat:float
    bimagerat:float elong:float nneg:int nbad:int rb:float ssdistnr:float ssmagnr:float
    ssnamenr:string sumrat:float magapbig:float sigmagapbig:float ranr:double decnr:double
    scorr:double magzpsci:float magzpsciunc:float magzpscirms:float clrcoeff:float
    clrcounc:float rbversion:string
"""


# lc_features_g / lc_features_r: 26 light-curve features per band
LC_FEATURES_SPEC = """
    mean:double weighted_mean:double standard_deviation:double median:double
    amplitude:double beyond_1_std:double cusum:double inter_percentile_range_10:double
    kurtosis:double linear_trend:double linear_trend_sigma:double linear_trend_noise:double
    linear_fit_slope:double linear_fit_slope_sigma:double linear_fit_reduced_chi2:double
    magnitude_percentage_ratio_40_5:double magnitude_percentage_ratio_20_10:double
    maximum_slope:double median_absolute_deviation:double
    median_buffer_range_percentage_10:double percent_amplitude:double mean_variance:double
    anderson_darling_normal:double chi2:double skew:double stetson_K:double
"""


CUTOUT = struct_of("fileName:string stampData:bytes")
CANDIDATE = struct_of(CANDIDATE_SPEC)
PRV_CANDIDATE = struct_of(PRV_CANDIDATE_SPEC)
LC_FEATURES = struct_of(LC_FEATURES_SPEC)


# Root columns in Fink's order (year/month/day come from the night directories;
# finkclass/tnsclass are computed by the transfer job).
ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("candid", AVRO_TO_ARROW["long"]),
        pa.field("schemavsn", AVRO_TO_ARROW["string"]),
        pa.field("publisher", AVRO_TO_ARROW["string"]),
        pa.field("objectId", AVRO_TO_ARROW["string"]),
        pa.field("candidate", CANDIDATE),
        pa.field("prv_candidates", pa.list_(PRV_CANDIDATE)),
        pa.field("cutoutScience", CUTOUT),
        pa.field("cutoutTemplate", CUTOUT),
        pa.field("cutoutDifference", CUTOUT),
        pa.field("brokerIngestTimestamp", AVRO_TO_ARROW["timestamp"]),
        pa.field("brokerStartProcessTimestamp", AVRO_TO_ARROW["timestamp"]),
        pa.field("fink_broker_version", AVRO_TO_ARROW["string"]),
        pa.field("fink_science_version", AVRO_TO_ARROW["string"]),
        pa.field("cdsxmatch", AVRO_TO_ARROW["string"]),
        pa.field("tns", AVRO_TO_ARROW["string"]),
        pa.field("DR3Name", AVRO_TO_ARROW["string"]),
        pa.field("Plx", AVRO_TO_ARROW["float"]),
        pa.field("e_Plx", AVRO_TO_ARROW["float"]),
        pa.field("gaiaVarFlag", AVRO_TO_ARROW["int"]),
        pa.field("gaiaClass", AVRO_TO_ARROW["string"]),
        pa.field("vsx", AVRO_TO_ARROW["string"]),
        pa.field("spicy_id", AVRO_TO_ARROW["int"]),
        pa.field("spicy_class", AVRO_TO_ARROW["string"]),
        pa.field("gcvs", AVRO_TO_ARROW["string"]),
        pa.field("x3hsp", AVRO_TO_ARROW["string"]),
        pa.field("x4lac", AVRO_TO_ARROW["string"]),
        pa.field("mangrove", pa.map_(pa.string(), AVRO_TO_ARROW["string"])),
        pa.field("roid", AVRO_TO_ARROW["int"]),
        pa.field("rf_snia_vs_nonia", AVRO_TO_ARROW["double"]),
        pa.field("snn_snia_vs_nonia", AVRO_TO_ARROW["double"]),
        pa.field("snn_sn_vs_all", AVRO_TO_ARROW["double"]),
        pa.field("mulens", AVRO_TO_ARROW["double"]),
        pa.field("nalerthist", AVRO_TO_ARROW["int"]),
        pa.field("rf_kn_vs_nonkn", AVRO_TO_ARROW["double"]),
        pa.field("anomaly_score", AVRO_TO_ARROW["double"]),
        pa.field("anomaly_score_beta", AVRO_TO_ARROW["double"]),
        pa.field("anomaly_score_anais", AVRO_TO_ARROW["double"]),
        pa.field("anomaly_score_emille", AVRO_TO_ARROW["double"]),
        pa.field("anomaly_score_julien", AVRO_TO_ARROW["double"]),
        pa.field("anomaly_score_maria", AVRO_TO_ARROW["double"]),
        pa.field("anomaly_score_emille_30days", AVRO_TO_ARROW["double"]),
        pa.field("anomaly_score_varvara", AVRO_TO_ARROW["double"]),
        pa.field("lc_features_g", LC_FEATURES),
        pa.field("lc_features_r", LC_FEATURES),
        pa.field("jd_first_real_det", AVRO_TO_ARROW["double"]),
        pa.field("jdstarthist_dt", AVRO_TO_ARROW["double"]),
        pa.field("mag_rate", AVRO_TO_ARROW["double"]),
        pa.field("sigma_rate", AVRO_TO_ARROW["double"]),
        pa.field("lower_rate", AVRO_TO_ARROW["double"]),
        pa.field("upper_rate", AVRO_TO_ARROW["double"]),
        pa.field("delta_time", AVRO_TO_ARROW["double"]),
        pa.field("from_upper", AVRO_TO_ARROW["boolean"]),
        pa.field("blazar_stats", pa.map_(pa.string(), AVRO_TO_ARROW["float"])),
        pa.field("is_transient", AVRO_TO_ARROW["boolean"]),
        pa.field("slsn_score", AVRO_TO_ARROW["double"]),
        pa.field("brokerEndProcessTimestamp", AVRO_TO_ARROW["timestamp"]),
        pa.field("tracklet", AVRO_TO_ARROW["string"]),
        pa.field("timestamp", AVRO_TO_ARROW["timestamp"]),
    ]
)


CUTOUT_COLUMNS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


# Keys of the map columns (reference section 4.3): Mangrove's cross-match fields and the CTAO
# blazar features the portal offers as `mangrove.X` and `blazar_stats.X`.
MANGROVE_KEYS = ("HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist")
MAP_KEYS: dict[str, tuple[str, ...]] = {"mangrove": MANGROVE_KEYS, "blazar_stats": ("m0", "m1", "m2")}
