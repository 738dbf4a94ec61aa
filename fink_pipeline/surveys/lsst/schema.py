"""Rubin (LSST) archive schema: Fink's full Data Transfer packet unified with every Rubin alert version.

The base is the schema of Fink's LSST Data Transfer output (fink-client `datatest/lsst`,
lsst.v10_0 packet + Fink added values, reference section 9.1), root fields in that order.
Fields of the other Rubin alert schemas an archive may hold are appended (never dropped), so
one schema reads every night whatever version wrote it:

* lsst.v11_0 / v11_1: `diaSource.exposureTime`, `trailAlgorithm`, `trail_flag`, `reliabilityVersion`;
* lsst.v8_0 / v9_0: root `MPCORB`, `ssSource` ecliptic/heliocentric/topocentric fields,
  `diaSource.time_processed`, `diaObject.validityStart`;
* lsst.v7_4: root `alertId`, `prvDiaNondetectionLimits`, `ssObject`, the covariance and error
  fields of `diaSource`, the proper-motion and nearby-object fields of `diaObject`;
* Fink 2025 (broker 4.0, lsst.v7_4 processing): the flat added values `cdsxmatch`, `tns`,
  `DR3Name`, `Plx`, `e_Plx`, `vsx`, `spicy_id`, `spicy_class`, `gcvs`, `x3hsp`, `x4lac`,
  `mangrove`, `roid`, `snn_sn_vs_others`, `cats_broad_class`, `brokerEndProcessMjd`;
  Fink 2026: `xm.spicy_SPICY`.

Types are those of the newest source of each field (Rubin's float/int where a pandas-written
sample has double). As for ZTF, broker timestamps are real UTC timestamps in the archive (the
transfer casts them to strings) and `year`/`month`/`day` live only in the directory names;
`mpc_orbits.created_at`/`updated_at`/`fitting_datetime` stay the raw long (microseconds) of
their timestamp-micros logical type, as Fink stores them.
"""

from __future__ import annotations

import pyarrow as pa

from fink_pipeline.surveys.ztf.schema import AVRO_TO_ARROW, struct_of

# diaSource (and each prvDiaSources item): lsst.v10_0 fields, then v11_x, v8_0, v7_4 additions
DIA_SOURCE_SPEC = """
    diaSourceId:long visit:long detector:int diaObjectId:long ssObjectId:long parentDiaSourceId:long
    midpointMjdTai:double ra:double raErr:float dec:double decErr:float ra_dec_Cov:float x:float
    xErr:float y:float yErr:float centroid_flag:boolean apFlux:float apFluxErr:float
    apFlux_flag:boolean apFlux_flag_apertureTruncated:boolean isNegative:boolean snr:float
    psfFlux:float psfFluxErr:float psfLnL:float psfChi2:float psfNdata:int psfFlux_flag:boolean
    psfFlux_flag_edge:boolean psfFlux_flag_noGoodPixels:boolean trailFlux:float trailFluxErr:float
    trailRa:double trailRaErr:float trailDec:double trailDecErr:float trailLength:float
    trailLengthErr:float trailAngle:float trailAngleErr:float trailChi2:float trailNdata:int
    trail_flag_edge:boolean dipoleMeanFlux:float dipoleMeanFluxErr:float dipoleFluxDiff:float
    dipoleFluxDiffErr:float dipoleLength:float dipoleAngle:float dipoleChi2:float dipoleNdata:int
    scienceFlux:float scienceFluxErr:float forced_PsfFlux_flag:boolean
    forced_PsfFlux_flag_edge:boolean forced_PsfFlux_flag_noGoodPixels:boolean templateFlux:float
    templateFluxErr:float ixx:float iyy:float ixy:float ixxPSF:float iyyPSF:float ixyPSF:float
    shape_flag:boolean shape_flag_no_pixels:boolean shape_flag_not_contained:boolean
    shape_flag_parent_source:boolean extendedness:float reliability:float band:string
    isDipole:boolean dipoleFitAttempted:boolean timeProcessedMjdTai:double
    timeWithdrawnMjdTai:double bboxSize:int pixelFlags:boolean pixelFlags_bad:boolean
    pixelFlags_cr:boolean pixelFlags_crCenter:boolean pixelFlags_edge:boolean
    pixelFlags_nodata:boolean pixelFlags_nodataCenter:boolean pixelFlags_interpolated:boolean
    pixelFlags_interpolatedCenter:boolean pixelFlags_offimage:boolean pixelFlags_saturated:boolean
    pixelFlags_saturatedCenter:boolean pixelFlags_suspect:boolean pixelFlags_suspectCenter:boolean
    pixelFlags_streak:boolean pixelFlags_streakCenter:boolean pixelFlags_injected:boolean
    pixelFlags_injectedCenter:boolean pixelFlags_injected_template:boolean
    pixelFlags_injected_templateCenter:boolean glint_trail:boolean exposureTime:float
    trailAlgorithm:int trail_flag:boolean reliabilityVersion:string time_processed:timestamp
    x_y_Cov:float is_negative:boolean psfRa:double psfRaErr:float psfDec:double psfDecErr:float
    psfFlux_psfRa_Cov:float psfFlux_psfDec_Cov:float psfRa_psfDec_Cov:float
    trailFlux_trailRa_Cov:float trailFlux_trailDec_Cov:float trailFlux_trailLength_Cov:float
    trailFlux_trailAngle_Cov:float trailRa_trailDec_Cov:float trailRa_trailLength_Cov:float
    trailRa_trailAngle_Cov:float trailDec_trailLength_Cov:float trailDec_trailAngle_Cov:float
    trailLength_trailAngle_Cov:float trailLnL:float dipoleRa:double dipoleRaErr:float
    dipoleDec:double dipoleDecErr:float dipoleLengthErr:float dipoleAngleErr:float
    dipoleMeanFlux_dipoleFluxDiff_Cov:float dipoleMeanFlux_dipoleRa_Cov:float
    dipoleMeanFlux_dipoleDec_Cov:float dipoleMeanFlux_dipoleLength_Cov:float
    dipoleMeanFlux_dipoleAngle_Cov:float dipoleFluxDiff_dipoleRa_Cov:float
    dipoleFluxDiff_dipoleDec_Cov:float dipoleFluxDiff_dipoleLength_Cov:float
    dipoleFluxDiff_dipoleAngle_Cov:float dipoleRa_dipoleDec_Cov:float
    dipoleRa_dipoleLength_Cov:float dipoleRa_dipoleAngle_Cov:float dipoleDec_dipoleLength_Cov:float
    dipoleDec_dipoleAngle_Cov:float dipoleLength_dipoleAngle_Cov:float dipoleLnL:float
    snapDiffFlux:float snapDiffFluxErr:float fpBkgd:float fpBkgdErr:float ixxErr:float iyyErr:float
    ixyErr:float ixx_iyy_Cov:float ixx_ixy_Cov:float iyy_ixy_Cov:float
"""

DIA_FORCED_SOURCE_SPEC = """
    diaForcedSourceId:long diaObjectId:long ra:double dec:double visit:long detector:int
    psfFlux:float psfFluxErr:float midpointMjdTai:double scienceFlux:float scienceFluxErr:float
    band:string timeProcessedMjdTai:double timeWithdrawnMjdTai:double time_processed:timestamp
"""

DIA_OBJECT_SPEC = """
    diaObjectId:long validityStartMjdTai:double ra:double raErr:float dec:double decErr:float
    ra_dec_Cov:float u_psfFluxMean:float u_psfFluxMeanErr:float u_psfFluxSigma:float
    u_psfFluxNdata:int u_fpFluxMean:float u_fpFluxMeanErr:float g_psfFluxMean:float
    g_psfFluxMeanErr:float g_psfFluxSigma:float g_psfFluxNdata:int g_fpFluxMean:float
    g_fpFluxMeanErr:float r_psfFluxMean:float r_psfFluxMeanErr:float r_psfFluxSigma:float
    r_psfFluxNdata:int r_fpFluxMean:float r_fpFluxMeanErr:float i_psfFluxMean:float
    i_psfFluxMeanErr:float i_psfFluxSigma:float i_psfFluxNdata:int i_fpFluxMean:float
    i_fpFluxMeanErr:float z_psfFluxMean:float z_psfFluxMeanErr:float z_psfFluxSigma:float
    z_psfFluxNdata:int z_fpFluxMean:float z_fpFluxMeanErr:float y_psfFluxMean:float
    y_psfFluxMeanErr:float y_psfFluxSigma:float y_psfFluxNdata:int y_fpFluxMean:float
    y_fpFluxMeanErr:float u_scienceFluxMean:float u_scienceFluxMeanErr:float g_scienceFluxMean:float
    g_scienceFluxMeanErr:float r_scienceFluxMean:float r_scienceFluxMeanErr:float
    i_scienceFluxMean:float i_scienceFluxMeanErr:float z_scienceFluxMean:float
    z_scienceFluxMeanErr:float y_scienceFluxMean:float y_scienceFluxMeanErr:float u_psfFluxMin:float
    u_psfFluxMax:float u_psfFluxMaxSlope:float u_psfFluxErrMean:float g_psfFluxMin:float
    g_psfFluxMax:float g_psfFluxMaxSlope:float g_psfFluxErrMean:float r_psfFluxMin:float
    r_psfFluxMax:float r_psfFluxMaxSlope:float r_psfFluxErrMean:float i_psfFluxMin:float
    i_psfFluxMax:float i_psfFluxMaxSlope:float i_psfFluxErrMean:float z_psfFluxMin:float
    z_psfFluxMax:float z_psfFluxMaxSlope:float z_psfFluxErrMean:float y_psfFluxMin:float
    y_psfFluxMax:float y_psfFluxMaxSlope:float y_psfFluxErrMean:float firstDiaSourceMjdTai:double
    lastDiaSourceMjdTai:double nDiaSources:int validityStart:timestamp radecMjdTai:double pmRa:float
    pmRaErr:float pmDec:float pmDecErr:float parallax:float parallaxErr:float pmRa_pmDec_Cov:float
    pmRa_parallax_Cov:float pmDec_parallax_Cov:float pmParallaxLnL:float pmParallaxChi2:float
    pmParallaxNdata:int u_psfFluxChi2:float u_fpFluxSigma:float g_psfFluxChi2:float
    g_fpFluxSigma:float r_psfFluxChi2:float r_fpFluxSigma:float i_psfFluxChi2:float
    i_fpFluxSigma:float z_psfFluxChi2:float z_fpFluxSigma:float y_psfFluxChi2:float
    y_fpFluxSigma:float nearbyObj1:long nearbyObj1Dist:float nearbyObj1LnP:float nearbyObj2:long
    nearbyObj2Dist:float nearbyObj2LnP:float nearbyObj3:long nearbyObj3Dist:float
    nearbyObj3LnP:float
"""

SS_SOURCE_SPEC = """
    diaSourceId:long ssObjectId:long designation:string eclLambda:double eclBeta:double
    galLon:double galLat:double elongation:float phaseAngle:float topoRange:float
    topoRangeRate:float helioRange:float helioRangeRate:float ephRa:double ephDec:double
    ephVmag:float ephRate:float ephRateRa:float ephRateDec:float ephOffset:float ephOffsetRa:double
    ephOffsetDec:double ephOffsetAlongTrack:float ephOffsetCrossTrack:float helio_x:float
    helio_y:float helio_z:float helio_vx:float helio_vy:float helio_vz:float helio_vtot:float
    topo_x:float topo_y:float topo_z:float topo_vx:float topo_vy:float topo_vz:float topo_vtot:float
    diaDistanceRank:int eclipticLambda:double eclipticBeta:double galacticL:double galacticB:double
    heliocentricDist:float topocentricDist:float predictedVMagnitude:float residualRa:double
    residualDec:double heliocentricX:float heliocentricY:float heliocentricZ:float
    heliocentricVX:float heliocentricVY:float heliocentricVZ:float topocentricX:float
    topocentricY:float topocentricZ:float topocentricVX:float topocentricVY:float
    topocentricVZ:float
"""

MPC_ORBITS_SPEC = """
    id:int designation:string packed_primary_provisional_designation:string
    unpacked_primary_provisional_designation:string mpc_orb_jsonb:string created_at:long
    updated_at:long orbit_type_int:int u_param:int nopp:int arc_length_total:double
    arc_length_sel:double nobs_total:int nobs_total_sel:int a:double q:double e:double i:double
    node:double argperi:double peri_time:double yarkovsky:double srp:double a1:double a2:double
    a3:double dt:double mean_anomaly:double period:double mean_motion:double a_unc:double
    q_unc:double e_unc:double i_unc:double node_unc:double argperi_unc:double peri_time_unc:double
    yarkovsky_unc:double srp_unc:double a1_unc:double a2_unc:double a3_unc:double dt_unc:double
    mean_anomaly_unc:double period_unc:double mean_motion_unc:double epoch_mjd:double h:double
    g:double not_normalized_rms:double normalized_rms:double earth_moid:double fitting_datetime:long
"""

# lc_features values: the 26 light-curve features per band (same as ZTF's lc_features_g/r)
LC_FEATURES_SPEC = """
    mean:double weighted_mean:double standard_deviation:double median:double amplitude:double
    beyond_1_std:double cusum:double inter_percentile_range_10:double kurtosis:double
    linear_trend:double linear_trend_sigma:double linear_trend_noise:double linear_fit_slope:double
    linear_fit_slope_sigma:double linear_fit_reduced_chi2:double
    magnitude_percentage_ratio_40_5:double magnitude_percentage_ratio_20_10:double
    maximum_slope:double median_absolute_deviation:double median_buffer_range_percentage_10:double
    percent_amplitude:double mean_variance:double anderson_darling_normal:double chi2:double
    skew:double stetson_K:double
"""

CLF_SPEC = """
    snnSnVsOthers_score:float cats_class:int cats_score:float earlySNIa_score:double
    elephant_kstest_science:float elephant_kstest_template:float
"""

XM_SPEC = """
    simbad_otype:string gaiadr3_DR3Name:string gaiadr3_Plx:float gaiadr3_e_Plx:float
    gaiadr3_VarFlag:int legacydr8_zphot:float legacydr8_e_zphot:float legacydr8_pstar:float
    legacydr8_fqual:int tns_fullname:string tns_type:string tns_redshift:float gcvs_type:string
    x3hsp_type:string x4lac_type:string vsx_Type:string spicy_class:string
    mangrove_HyperLEDA_name:string mangrove_2MASS_name:string mangrove_lum_dist:float
    mangrove_ang_dist:float spicy_SPICY:int
"""

PRED_SPEC = """
    is_sso:boolean is_first:boolean is_cataloged:boolean main_label_classifier:int
    main_label_crossmatch:string
"""

MISC_SPEC = """
    firstDiaSourceMjdTaiFink:double
"""

# lsst.v8_0 / v9_0 orbit record (replaced by mpc_orbits in v10_0)
MPCORB_SPEC = """
    mpcDesignation:string ssObjectId:long mpcH:float epoch:double M:double peri:double node:double
    incl:double e:double a:double q:double t_p:double
"""

# lsst.v7_4 only
DIA_NONDETECTION_LIMIT_SPEC = """
    ccdVisitId:long midpointMjdTai:double band:string diaNoise:float
"""

SS_OBJECT_SPEC = """
    ssObjectId:long discoverySubmissionDate:double firstObservationDate:double arc:float numObs:int
    MOID:float MOIDTrueAnomaly:float MOIDEclipticLongitude:float MOIDDeltaV:float u_H:float
    u_G12:float u_HErr:float u_G12Err:float u_H_u_G12_Cov:float u_Chi2:float u_Ndata:int g_H:float
    g_G12:float g_HErr:float g_G12Err:float g_H_g_G12_Cov:float g_Chi2:float g_Ndata:int r_H:float
    r_G12:float r_HErr:float r_G12Err:float r_H_r_G12_Cov:float r_Chi2:float r_Ndata:int i_H:float
    i_G12:float i_HErr:float i_G12Err:float i_H_i_G12_Cov:float i_Chi2:float i_Ndata:int z_H:float
    z_G12:float z_HErr:float z_G12Err:float z_H_z_G12_Cov:float z_Chi2:float z_Ndata:int y_H:float
    y_G12:float y_HErr:float y_G12Err:float y_H_y_G12_Cov:float y_Chi2:float y_Ndata:int
    medianExtendedness:float
"""

DIA_SOURCE = struct_of(DIA_SOURCE_SPEC)
DIA_FORCED_SOURCE = struct_of(DIA_FORCED_SOURCE_SPEC)
DIA_OBJECT = struct_of(DIA_OBJECT_SPEC)
SS_SOURCE = struct_of(SS_SOURCE_SPEC)
MPC_ORBITS = struct_of(MPC_ORBITS_SPEC)
LC_FEATURES = struct_of(LC_FEATURES_SPEC)
CLF = struct_of(CLF_SPEC)
XM = struct_of(XM_SPEC)
PRED = struct_of(PRED_SPEC)
MISC = struct_of(MISC_SPEC)
MPCORB = struct_of(MPCORB_SPEC)
DIA_NONDETECTION_LIMIT = struct_of(DIA_NONDETECTION_LIMIT_SPEC)
SS_OBJECT = struct_of(SS_OBJECT_SPEC)

_T = AVRO_TO_ARROW

ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("diaSourceId", _T["long"]),
        pa.field("observation_reason", _T["string"]),
        pa.field("target_name", _T["string"]),
        pa.field("diaSource", DIA_SOURCE),
        pa.field("prvDiaSources", pa.list_(DIA_SOURCE)),
        pa.field("prvDiaForcedSources", pa.list_(DIA_FORCED_SOURCE)),
        pa.field("diaObject", DIA_OBJECT),
        pa.field("ssSource", SS_SOURCE),
        pa.field("mpc_orbits", MPC_ORBITS),
        pa.field("cutoutDifference", _T["bytes"]),
        pa.field("cutoutScience", _T["bytes"]),
        pa.field("cutoutTemplate", _T["bytes"]),
        pa.field("brokerIngestMjd", _T["double"]),
        pa.field("lsst_schema_version", _T["string"]),
        pa.field("brokerStartProcessTimestamp", _T["timestamp"]),
        pa.field("fink_broker_version", _T["string"]),
        pa.field("fink_science_version", _T["string"]),
        pa.field("publisher", _T["string"]),
        pa.field("lc_features", pa.map_(pa.string(), LC_FEATURES)),
        pa.field("clf", CLF),
        pa.field("xm", XM),
        pa.field("pred", PRED),
        pa.field("misc", MISC),
        pa.field("brokerEndProcessTimestamp", _T["timestamp"]),
        pa.field("timestamp", _T["timestamp"]),
        pa.field("tns_type_recomputed", _T["string"]),
        # older packet versions
        pa.field("MPCORB", MPCORB),
        pa.field("alertId", _T["long"]),
        pa.field("prvDiaNondetectionLimits", pa.list_(DIA_NONDETECTION_LIMIT)),
        pa.field("ssObject", SS_OBJECT),
        # Fink 2025 flat added values
        pa.field("brokerEndProcessMjd", _T["double"]),
        pa.field("cdsxmatch", _T["string"]),
        pa.field("tns", _T["string"]),
        pa.field("DR3Name", _T["string"]),
        pa.field("Plx", _T["float"]),
        pa.field("e_Plx", _T["float"]),
        pa.field("vsx", _T["string"]),
        pa.field("spicy_id", _T["int"]),
        pa.field("spicy_class", _T["string"]),
        pa.field("gcvs", _T["string"]),
        pa.field("x3hsp", _T["string"]),
        pa.field("x4lac", _T["string"]),
        pa.field("mangrove", pa.map_(pa.string(), _T["string"])),
        pa.field("roid", _T["int"]),
        pa.field("snn_sn_vs_others", _T["float"]),
        pa.field("cats_broad_class", _T["int"]),
    ]
)

CUTOUT_COLUMNS = ("cutoutDifference", "cutoutScience", "cutoutTemplate")
