/*
 * vr-engine's tuned pjsua2: pjlib/include/pj/config_site.h, copied in by build/pjsua2/build.sh.
 *
 * A receptionist server: many concurrent calls, each an RTP stream plus one file player on an
 * 8 kHz conference bridge; no sound device, no video, no TLS/SRTP (UDP and TCP signalling).
 * The call limit below is what `pjsua_call_get_max_count()` reports once pjsua is initialised
 * with a larger `uaConfig.maxCalls` (pjsua caps maxCalls at PJSUA_MAX_CALLS); the engine reads
 * it through ctypes. Keep VR_TUNED_MAX_CALLS in build.sh's marker in step with it.
 */
#ifndef VR_ENGINE_CONFIG_SITE_H
#define VR_ENGINE_CONFIG_SITE_H

/* --- calls and the media around them ------------------------------------------------------ */
#define PJSUA_MAX_CALLS                 1024
#define PJSUA_MAX_PLAYERS               1024
#define PJSUA_MAX_RECORDERS             1024
/* Media lines per SDP, and per call (pjsua_internal.h: PJSUA_MAX_CALL_MEDIA =
 * PJMEDIA_MAX_SDP_MEDIA; default 16). Each slot of pjsua's static call table holds that many
 * media records twice: 155 KB per call at 16, all of it touched at start-up (160 MB for 1,024
 * calls); 39 KB at 4. A receptionist answers audio: 4 covers audio + video + two more lines
 * (declined); an offer with more than 4 media lines is refused. */
#define PJMEDIA_MAX_SDP_MEDIA           4
/* every call and every player (and recorder) takes a conference-bridge slot */
#define PJSUA_MAX_CONF_PORTS            (PJSUA_MAX_CALLS + PJSUA_MAX_PLAYERS + 64)

/* --- sockets: two per call (RTP + RTCP), SIP listeners, TCP connections -------------------- */
/* Linux: ./configure --enable-epoll, so this is not bounded by FD_SETSIZE. */
#define PJ_IOQUEUE_MAX_HANDLES          8192
/* one libHandleEvents() turn serves more ready sockets (default 16) */
#define PJ_IOQUEUE_MAX_EVENTS_IN_SINGLE_POLL 64

/* --- SIP: transactions (including the ones lingering in Timer D/K) and dialogs ------------ */
/* hash table sizes: 2^n - 1 */
#define PJSIP_MAX_TSX_COUNT             (32 * 1024 - 1)
#define PJSIP_MAX_DIALOG_COUNT          (16 * 1024 - 1)

/* --- IPv6 (off in pjlib's defaults, and in the PyPI wheel) -------------------------------- */
#define PJ_HAS_IPV6                     1

/* --- features the engine does not use ----------------------------------------------------- */
#define PJMEDIA_HAS_VIDEO               0
#define PJMEDIA_HAS_SRTP                0
#define PJSIP_HAS_TLS_TRANSPORT         0
#define PJMEDIA_HAS_WEBRTC_AEC          0

#endif /* VR_ENGINE_CONFIG_SITE_H */
