/*
 * netd's CNI plugin executable, compiled: the common path of netd/cni/plugin.py in C.
 *
 * Every container start execs the plugin (Podman: VERSION, then ADD), so its start-up is paid on
 * every ADD and DEL. A Python interpreter alone costs 10-15 ms on a 2-vCPU host; this program
 * costs about 1 ms. For a well-formed call it does what the Python plugin does: answer VERSION
 * locally, or check the CNI_* variables and that stdin is exactly one strict JSON object, put
 * those bytes in place of "config" in one HTTP request to the daemon's Unix socket, check the
 * daemon's answer and print it (200: the CNI result, 422: a CNI error object).
 *
 * Stdin is only ever the "config" value (issue #14): it is sent only after json_check() has
 * read it as one RFC 8259 object with nothing after it, so it cannot close the request object
 * early or add a key to it. The validator accepts a subset of what netd.cni.strict accepts
 * (no duplicated key, no NaN or Infinity, no number out of range, valid UTF-8, no BOM, at most
 * NETD_MAX_DEPTH levels); what it cannot decide cheaply (a key with an escape, a number longer
 * than 64 bytes) is "unusual" and left to Python.
 *
 * Anything unusual is handed to the Python plugin (netd.cni.fast.handoff) by exec, with stdin
 * replayed from a memfd: a variable that is missing or fails a check, stdin that fails the
 * validator, an unsupported VERSION request, a daemon that cannot be reached (the errno is
 * passed on; nothing was sent) or an answer this program would not print (the raw answer is
 * passed on, so the request is never sent twice). Python composes every error message, so both
 * clients report errors identically; the rules each side applies are in netd/cni/environment.py,
 * netd/cni/strict.py and netd/cni/answer.py.
 *
 * `netd cni install` compiles this file with -DNETD_PYTHON, -DNETD_ROOT, -DNETD_VERSIONS and
 * the NETD_MAX_* limits (the interpreter, the directory holding the netd package, and the spec
 * versions and limits from netd/cni/spec.py) so that there is one source of truth for each.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#if !defined(NETD_PYTHON) || !defined(NETD_ROOT) || !defined(NETD_VERSIONS) ||                  \
    !defined(NETD_MAX_CONFIG) || !defined(NETD_MAX_DEPTH) || !defined(NETD_MAX_CONTAINER_ID) ||    \
    !defined(NETD_MAX_IFNAME) || !defined(NETD_MAX_NETNS) || !defined(NETD_MAX_ENV_TEXT)
#error "build with -DNETD_PYTHON=... -DNETD_ROOT=... -DNETD_VERSIONS=... -DNETD_MAX_*=... (netd cni install does)"
#endif

#define DEFAULT_SOCKET "/run/netd/netd.sock"
#define TIMEOUT_SECONDS 60
#define MAX_ANSWER (64u * 1024u * 1024u)

static const char *const versions[] = {NETD_VERSIONS, NULL};

struct buf {
	char *data;
	size_t len, cap;
};

static void die_oom(void)
{
	/* Nothing sensible is left to do; the runtime sees a failed plugin with a message. */
	fputs("{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"netd CNI plugin: out of memory\"}\n",
	      stdout);
	exit(1);
}

static void buf_put(struct buf *b, const char *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + len + 1)
			cap *= 2;
		char *grown = realloc(b->data, cap);
		if (!grown)
			die_oom();
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* value as a JSON string literal (RFC 8259 section 7); other bytes pass through as they are. */
static void buf_json_string(struct buf *b, const char *value)
{
	char esc[8];
	buf_put(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			buf_put(b, esc, 2);
		} else if (*p < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", *p);
			buf_put(b, esc, 6);
		} else {
			buf_put(b, (const char *)p, 1);
		}
	}
	buf_put(b, "\"", 1);
}

static int read_all(int fd, struct buf *b, size_t limit)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf_put(b, chunk, (size_t)n);
		if (b->len > limit) {
			errno = EMSGSIZE;
			return -1;
		}
	}
}

static const char *env(const char *name)
{
	const char *value = getenv(name);
	return value ? value : "";
}

static int memfd_with(const char *name, const char *data, size_t len)
{
	int fd = memfd_create(name, 0);
	if (fd < 0)
		return -1;
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, data + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		done += (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) == 0)
		return fd;
fail:;
	int saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* CNI error 5 (I/O) for a local failure: the message names what was being done. */
static void io_failure(const char *doing)
{
	printf("{\"cniVersion\":\"1.0.0\",\"code\":5,\"msg\":\"netd CNI plugin: %s: %s\"}\n",
	       doing, strerror(errno));
	exit(1);
}

/* Replace this process with the Python plugin; stdin replayed, the answer or errno passed on. */
static void handoff_to(const struct buf *in, const struct buf *answer, int error, const char *path)
{
	char number[32];
	int fd = memfd_with("netd-cni-stdin", in->data ? in->data : "", in->len);
	if (fd < 0 || dup2(fd, 0) < 0)
		io_failure("replaying stdin to the Python plugin");
	if (fd != 0)
		close(fd);
	if (answer) {
		/* Without it the Python path would send the request again: refuse instead. */
		int afd = memfd_with("netd-cni-answer", answer->data ? answer->data : "", answer->len);
		if (afd < 0)
			io_failure("passing the daemon's answer to the Python plugin");
		snprintf(number, sizeof number, "%d", afd);
		setenv("NETD_CNI_ANSWER_FD", number, 1);
	}
	if (error) {
		/* Python maps ETIMEDOUT to TimeoutError, which its message distinguishes. */
		snprintf(number, sizeof number, "%d", error == EAGAIN ? ETIMEDOUT : error);
		setenv("NETD_CNI_UNREACHABLE", number, 1);
		setenv("NETD_CNI_SOCKET", path, 1);
	}
	char *const argv[] = {"python3", "-I", "-S", "-c",
			      "import sys; sys.path.insert(0, " NETD_ROOT "); "
			      "from netd.cni.fast import handoff; handoff()",
			      NULL};
	execv(NETD_PYTHON, argv);
	printf("{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"netd CNI plugin: cannot run %s: "
	       "%s\"}\n",
	       NETD_PYTHON, strerror(errno));
	exit(1);
}

static void handoff(const struct buf *in, const struct buf *answer, int error)
{
	handoff_to(in, answer, error, DEFAULT_SOCKET);
}

/* The string value of key when it occurs exactly once and holds no escape; else NULL. */
static char *string_value(const char *config, const char *key, char *value, size_t size)
{
	const char *at = strstr(config, key);
	if (!at || strstr(at + 1, key))
		return NULL;
	const char *p = at + strlen(key);
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p++ != ':')
		return NULL;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p++ != '"')
		return NULL;
	const char *end = strchr(p, '"');
	if (!end || (size_t)(end - p) >= size || memchr(p, '\\', (size_t)(end - p)))
		return NULL;
	memcpy(value, p, (size_t)(end - p));
	value[end - p] = '\0';
	return value;
}

static char *requested_version(const char *config)
{
	static char version[32];
	return string_value(config, "\"cniVersion\"", version, sizeof version);
}

static int version_answer(const char *config)
{
	const char *version = requested_version(config);
	int supported = 0;
	for (int i = 0; version && versions[i]; i++)
		supported |= strcmp(version, versions[i]) == 0;
	if (!supported)
		return -1;
	printf("{\"cniVersion\":\"%s\",\"supportedVersions\":[", version);
	for (int i = 0; versions[i]; i++)
		printf("%s\"%s\"", i ? "," : "", versions[i]);
	puts("]}");
	return 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Send the request and read the whole answer; 0, or -1 with errno (ECONNREFUSED etc.). */
static int exchange(const char *path, const struct buf *request, struct buf *answer)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof addr.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, path);
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -1;
	struct timeval timeout = {.tv_sec = TIMEOUT_SECONDS};
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
	if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0)
		goto fail;
	for (size_t done = 0; done < request->len;) {
		ssize_t n = send(sock, request->data + done, request->len - done, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		done += (size_t)n;
	}
	if (read_all(sock, answer, MAX_ANSWER) < 0)
		goto fail;
	close(sock);
	return 0;
fail:;
	int saved = errno;
	close(sock);
	errno = saved;
	return -1;
}

/* ---- strict JSON (RFC 8259), the subset of netd.cni.strict this program decides itself ---- */

enum { JSON_OK = 0, JSON_INVALID = -1, JSON_UNUSUAL = -2 };

/* A top-level member of the document: its raw value and, for an array, what it holds. */
struct member {
	const char *key;
	const char *value; /* raw text of the value; for a string, without the quotes */
	size_t len;
	char type; /* 's' string, 'n' number, 'o' object, 'a' array, 'l' literal; 0 when absent */
	int escaped;	   /* a string value with a backslash: compare it in Python */
	size_t count;	   /* array: elements */
	int all_objects;   /* array: every element is an object */
};

struct key {
	const char *at;
	size_t len;
};

struct scan {
	const unsigned char *p, *end;
	int depth;
	int unusual;
	struct key *keys; /* the keys of every open object, innermost last */
	size_t nkeys, capkeys;
	struct member *want; /* top-level members to record, ended by one with key NULL */
};

static int ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && ws(*s->p))
		s->p++;
}

/* Length of the UTF-8 sequence at p (shortest form, no surrogates, <= U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	size_t n = (size_t)(end - p);
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xC2 && p[0] <= 0xDF)
		return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
	if (p[0] >= 0xE0 && p[0] <= 0xEF) {
		if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
			return 0;
		if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] > 0x9F))
			return 0; /* overlong; UTF-16 surrogate */
		return 3;
	}
	if (p[0] >= 0xF0 && p[0] <= 0xF4) {
		if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
			return 0;
		if ((p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] > 0x8F))
			return 0; /* overlong; above U+10FFFF */
		return 4;
	}
	return 0;
}

static int utf8_valid(const char *text, size_t len)
{
	const unsigned char *p = (const unsigned char *)text, *end = p + len;
	while (p < end) {
		size_t n = utf8_len(p, end);
		if (!n)
			return 0;
		p += n;
	}
	return 1;
}

static int is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string at s->p (the opening quote): its contents and length, and whether it has escapes. */
static int json_string(struct scan *s, const char **at, size_t *len, int *escaped)
{
	s->p++;
	*at = (const char *)s->p;
	*escaped = 0;
	while (s->p < s->end) {
		unsigned char c = *s->p;
		if (c == '"') {
			*len = (size_t)((const char *)s->p - *at);
			s->p++;
			return JSON_OK;
		}
		if (c < 0x20)
			return JSON_INVALID;
		if (c == '\\') {
			*escaped = 1;
			if (s->end - s->p < 2)
				return JSON_INVALID;
			c = s->p[1];
			if (c == 'u') {
				if (s->end - s->p < 6 || !is_hex(s->p[2]) || !is_hex(s->p[3]) ||
				    !is_hex(s->p[4]) || !is_hex(s->p[5]))
					return JSON_INVALID;
				s->p += 6;
			} else if (strchr("\"\\/bfnrt", c) && c) {
				s->p += 2;
			} else {
				return JSON_INVALID;
			}
			continue;
		}
		size_t n = utf8_len(s->p, s->end);
		if (!n)
			return JSON_INVALID;
		s->p += n;
	}
	return JSON_INVALID;
}

static int json_number(struct scan *s)
{
	const unsigned char *start = s->p;
	if (s->p < s->end && *s->p == '-')
		s->p++;
	if (s->p >= s->end)
		return JSON_INVALID;
	if (*s->p == '0') {
		s->p++;
	} else if (*s->p >= '1' && *s->p <= '9') {
		while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
			s->p++;
	} else {
		return JSON_INVALID;
	}
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (s->p >= s->end || *s->p < '0' || *s->p > '9')
			return JSON_INVALID;
		while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
			s->p++;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (s->p >= s->end || *s->p < '0' || *s->p > '9')
			return JSON_INVALID;
		while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
			s->p++;
	}
	char text[65];
	size_t len = (size_t)(s->p - start);
	if (len >= sizeof text) {
		s->unusual = 1; /* Python decides (it refuses integers of more than 4300 digits) */
		return JSON_OK;
	}
	memcpy(text, start, len);
	text[len] = '\0';
	/* Python reads 1e999 as infinity, which strict.py refuses. */
	return isfinite(strtod(text, NULL)) ? JSON_OK : JSON_INVALID;
}

static int key_order(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->at, y->at, x->len);
}

static int json_value(struct scan *s, struct member *m);

/* Every key of the object whose keys start at index first is different (sorted, then compared). */
static int keys_unique(struct scan *s, size_t first)
{
	size_t n = s->nkeys - first;
	qsort(s->keys + first, n, sizeof *s->keys, key_order);
	for (size_t i = first + 1; i < s->nkeys; i++)
		if (!key_order(&s->keys[i - 1], &s->keys[i]))
			return 0;
	s->nkeys = first;
	return 1;
}

static int json_object(struct scan *s)
{
	size_t first = s->nkeys;
	int top = s->depth == 1;
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == '}') {
		s->p++;
		return JSON_OK;
	}
	for (;;) {
		const char *key;
		size_t len;
		int escaped, rc;
		skip_ws(s);
		if (s->p >= s->end || *s->p != '"')
			return JSON_INVALID;
		if ((rc = json_string(s, &key, &len, &escaped)) != JSON_OK)
			return rc;
		if (escaped)
			s->unusual = 1; /* "a" and "\u0061" are one key: Python compares them */
		if (s->nkeys == s->capkeys) {
			s->capkeys = s->capkeys ? s->capkeys * 2 : 64;
			s->keys = realloc(s->keys, s->capkeys * sizeof *s->keys);
			if (!s->keys)
				die_oom();
		}
		s->keys[s->nkeys++] = (struct key){key, len};
		skip_ws(s);
		if (s->p >= s->end || *s->p != ':')
			return JSON_INVALID;
		s->p++;
		struct member *m = NULL;
		for (struct member *w = s->want; top && w && w->key; w++)
			if (!escaped && strlen(w->key) == len && !memcmp(w->key, key, len))
				m = w;
		if ((rc = json_value(s, m)) != JSON_OK)
			return rc;
		skip_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == '}') {
			s->p++;
			return keys_unique(s, first) ? JSON_OK : JSON_INVALID;
		}
		return JSON_INVALID;
	}
}

static int json_array(struct scan *s, struct member *m)
{
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == ']') {
		s->p++;
		return JSON_OK;
	}
	for (;;) {
		skip_ws(s);
		if (m) {
			m->count++;
			m->all_objects &= s->p < s->end && *s->p == '{';
		}
		int rc = json_value(s, NULL);
		if (rc != JSON_OK)
			return rc;
		skip_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == ']') {
			s->p++;
			return JSON_OK;
		}
		return JSON_INVALID;
	}
}

static int literal(struct scan *s, const char *word)
{
	size_t len = strlen(word);
	if ((size_t)(s->end - s->p) < len || memcmp(s->p, word, len))
		return JSON_INVALID; /* NaN, Infinity and friends end here */
	s->p += len;
	return JSON_OK;
}

/* One value at s->p; when m is given (a wanted top-level member) it is recorded there. */
static int json_value(struct scan *s, struct member *m)
{
	skip_ws(s);
	if (s->p >= s->end)
		return JSON_INVALID;
	const unsigned char *start = s->p;
	int rc;
	char type;
	if (m) {
		m->count = 0;
		m->all_objects = 1;
	}
	switch (*s->p) {
	case '{':
	case '[':
		if (++s->depth > NETD_MAX_DEPTH)
			return JSON_INVALID;
		type = *s->p == '{' ? 'o' : 'a';
		rc = type == 'o' ? json_object(s) : json_array(s, m);
		s->depth--;
		break;
	case '"': {
		const char *at;
		size_t len;
		int escaped;
		rc = json_string(s, &at, &len, &escaped);
		if (rc == JSON_OK && m) {
			m->type = 's';
			m->value = at;
			m->len = len;
			m->escaped = escaped;
		}
		return rc;
	}
	case 't':
		type = 'l';
		rc = literal(s, "true");
		break;
	case 'f':
		type = 'l';
		rc = literal(s, "false");
		break;
	case 'n':
		type = 'l';
		rc = literal(s, "null");
		break;
	default:
		type = 'n';
		rc = json_number(s);
	}
	if (rc == JSON_OK && m) {
		m->type = type;
		m->value = (const char *)start;
		m->len = (size_t)(s->p - start);
	}
	return rc;
}

/* JSON_OK when text is exactly one object (surrounding JSON whitespace allowed) and nothing
 * in it needs Python's judgement; the wanted top-level members are then filled in. */
static int json_check(const char *text, size_t len, struct member *want)
{
	struct scan s = {.p = (const unsigned char *)text, .end = (const unsigned char *)text + len,
			 .want = want};
	for (struct member *w = want; w && w->key; w++)
		w->type = 0;
	skip_ws(&s);
	int rc = s.p < s.end && *s.p == '{' ? json_value(&s, NULL) : JSON_INVALID;
	skip_ws(&s);
	if (rc == JSON_OK && s.p != s.end)
		rc = JSON_INVALID; /* trailing bytes: a second document, or the rest of an injection */
	free(s.keys);
	if (rc == JSON_OK && s.unusual)
		rc = JSON_UNUSUAL;
	return rc;
}

static struct member *member(struct member *want, const char *key)
{
	for (; want->key; want++)
		if (!strcmp(want->key, key))
			return want->type ? want : NULL;
	return NULL;
}

/* ---- the environment (netd/cni/environment.py makes the same checks and words the errors) ---- */

static int name_ok(const char *value, size_t max)
{
	size_t len = strlen(value);
	if (len > max || !((value[0] >= 'a' && value[0] <= 'z') || (value[0] >= 'A' && value[0] <= 'Z') ||
			   (value[0] >= '0' && value[0] <= '9')))
		return 0;
	for (const char *p = value; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '_' || *p == '.' || *p == '-'))
			return 0;
	return 1;
}

/* Every CNI_* value this program sends is one Python would send. */
static int env_ok(void)
{
	static const char *const sent[] = {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS",
					   "CNI_PATH"};
	for (size_t i = 0; i < sizeof sent / sizeof sent[0]; i++)
		if (!utf8_valid(env(sent[i]), strlen(env(sent[i]))))
			return 0;
	const char *id = env("CNI_CONTAINERID"), *ifname = env("CNI_IFNAME"), *netns = env("CNI_NETNS");
	if (*id && !name_ok(id, NETD_MAX_CONTAINER_ID))
		return 0;
	if (*ifname && !name_ok(ifname, NETD_MAX_IFNAME))
		return 0;
	if (*netns && (netns[0] != '/' || strlen(netns) > NETD_MAX_NETNS))
		return 0;
	return strlen(env("CNI_ARGS")) <= NETD_MAX_ENV_TEXT && strlen(env("CNI_PATH")) <= NETD_MAX_ENV_TEXT;
}

/* ---- the answer (netd/cni/answer.py applies the same rules and words the errors) ---- */

static int array_of_objects(const struct member *m, int non_empty)
{
	return m && m->type == 'a' && m->all_objects && (!non_empty || m->count > 0);
}

/* A 200 to ADD this program may print: the rules of answer.result_problem. */
static int result_ok(const char *body, size_t len, const struct member *config_version)
{
	struct member want[] = {{.key = "cniVersion"}, {.key = "code"},	 {.key = "ips"},
				{.key = "interfaces"}, {.key = "routes"}, {.key = "dns"},
				{.key = NULL}};
	if (json_check(body, len, want) != JSON_OK)
		return 0;
	const struct member *version = member(want, "cniVersion"), *m;
	if (member(want, "code") || !version || version->type != 's' || version->escaped ||
	    version->len != config_version->len ||
	    memcmp(version->value, config_version->value, version->len))
		return 0;
	if (!array_of_objects(member(want, "ips"), 1))
		return 0;
	if ((m = member(want, "interfaces")) && !array_of_objects(m, 0))
		return 0;
	if ((m = member(want, "routes")) && !array_of_objects(m, 0))
		return 0;
	return !(m = member(want, "dns")) || m->type == 'o';
}

/* A 422 this program may print: a CNI error object with an integer code >= 1 and a msg. */
static int error_ok(const char *body, size_t len)
{
	struct member want[] = {{.key = "code"}, {.key = "msg"}, {.key = NULL}};
	if (json_check(body, len, want) != JSON_OK)
		return 0;
	const struct member *code = member(want, "code"), *msg = member(want, "msg");
	if (!code || code->type != 'n' || code->len > 9 || code->value[0] < '1' || code->value[0] > '9' ||
	    !msg || msg->type != 's')
		return 0;
	for (size_t i = 0; i < code->len; i++)
		if (code->value[i] < '0' || code->value[i] > '9')
			return 0;
	return 1;
}

/* The body of a plain HTTP/1.x answer and its status; -1 for anything Python should judge. */
static int http_body(const struct buf *answer, const char **body, size_t *len)
{
	const char *data = answer->data, *end = data + answer->len;
	const char *head_end = memmem(data, answer->len, "\r\n\r\n", 4);
	if (!head_end || answer->len < 12 ||
	    (strncmp(data, "HTTP/1.1 ", 9) && strncmp(data, "HTTP/1.0 ", 9)))
		return -1;
	for (int i = 9; i < 12; i++)
		if (data[i] < '0' || data[i] > '9')
			return -1;
	if (data[12] != ' ' && data[12] != '\r')
		return -1;
	int status = (data[9] - '0') * 100 + (data[10] - '0') * 10 + (data[11] - '0');
	*body = head_end + 4;
	*len = (size_t)(end - *body);
	/* Every header line ends in CRLF; the first CRLF of the blank line ends the last one. */
	const char *lines_end = head_end + 2;
	const char *line = (const char *)memmem(data, (size_t)(lines_end - data), "\r\n", 2) + 2;
	while (line < lines_end) {
		const char *eol = memmem(line, (size_t)(lines_end - line), "\r\n", 2);
		const char *colon = memchr(line, ':', (size_t)(eol - line));
		size_t name = colon ? (size_t)(colon - line) : 0;
		if (name == 17 && !strncasecmp(line, "transfer-encoding", 17))
			return -1; /* chunked: Python reads it */
		if (name == 14 && !strncasecmp(line, "content-length", 14)) {
			const char *v = colon + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			const char *v_end = eol;
			while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
				v_end--;
			if (v == v_end || v_end - v > 10)
				return -1;
			size_t length = 0;
			for (const char *d = v; d < v_end; d++) {
				if (*d < '0' || *d > '9')
					return -1;
				length = length * 10 + (size_t)(*d - '0');
			}
			if (length > *len)
				return -1; /* truncated */
			*len = length;
		}
		line = eol + 2;
	}
	return status;
}

int main(void)
{
	struct buf in = {0}, body = {0}, request = {0}, answer = {0};
	const char *command = env("CNI_COMMAND");
	/* One byte past the limit is enough for Python to refuse the config (code 7). */
	if (read_all(0, &in, NETD_MAX_CONFIG) < 0)
		handoff(&in, NULL, 0);
	buf_put(&in, "", 0); /* NUL-terminated even when empty */

	if (strcmp(command, "VERSION") == 0) {
		if (version_answer(in.data) == 0)
			return 0;
		handoff(&in, NULL, 0);
	}
	/* SPEC.md "Parameters": the variables each verb needs. */
	int needs_container = !strcmp(command, "ADD") || !strcmp(command, "CHECK");
	int known = needs_container || !strcmp(command, "DEL") || !strcmp(command, "GC") ||
		    !strcmp(command, "STATUS");
	if (!known || (needs_container && (!*env("CNI_CONTAINERID") || !*env("CNI_NETNS") ||
					    !*env("CNI_IFNAME"))) ||
	    (!strcmp(command, "DEL") && (!*env("CNI_CONTAINERID") || !*env("CNI_IFNAME"))) ||
	    !env_ok())
		handoff(&in, NULL, 0);

	const char *config = in.data;
	size_t len = in.len;
	while (len && is_space(*config))
		config++, len--;
	while (len && is_space(config[len - 1]))
		len--;
	/* Exactly one object, or Python says why not. Its cniVersion is what ADD must answer in. */
	struct member config_want[] = {{.key = "cniVersion"}, {.key = NULL}};
	if (json_check(config, len, config_want) != JSON_OK)
		handoff(&in, NULL, 0);
	const struct member *version = member(config_want, "cniVersion");
	int supported = 0;
	for (int i = 0; version && version->type == 's' && versions[i]; i++)
		supported |= strlen(versions[i]) == version->len &&
			     !memcmp(versions[i], version->value, version->len);

	/* The conflist key "socket" (an absolute path) wins over NETD_SOCKET, as in plugin.py. */
	static char conf_socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *path = *env("NETD_SOCKET") ? env("NETD_SOCKET") : DEFAULT_SOCKET;
	if (strstr(config, "\"socket\"")) {
		if (!string_value(config, "\"socket\"", conf_socket, sizeof conf_socket) ||
		    conf_socket[0] != '/')
			handoff(&in, NULL, 0);
		path = conf_socket;
	}

	static const char *const fields[][2] = {
	    {"command", "CNI_COMMAND"}, {"containerId", "CNI_CONTAINERID"},
	    {"netns", "CNI_NETNS"},     {"ifname", "CNI_IFNAME"},
	    {"args", "CNI_ARGS"},       {"path", "CNI_PATH"},
	};
	buf_str(&body, "{");
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		if (i)
			buf_str(&body, ",");
		buf_json_string(&body, fields[i][0]);
		buf_str(&body, ":");
		buf_json_string(&body, env(fields[i][1]));
	}
	/* Safe only because json_check() accepted exactly one object: see the top of the file. */
	buf_str(&body, ",\"config\":");
	buf_put(&body, config, len);
	buf_str(&body, "}");
	char head[256];
	snprintf(head, sizeof head,
		 "POST /v1/cni HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		 body.len);
	buf_str(&request, head);
	buf_put(&request, body.data, body.len);

	if (exchange(path, &request, &answer) < 0)
		handoff_to(&in, NULL, errno ? errno : EIO, path);
	buf_put(&answer, "", 0);

	/* Print only what answer.py would print; anything else Python judges (and words). */
	const char *result = "";
	size_t result_len = 0;
	int status = http_body(&answer, &result, &result_len);
	if (status < 0)
		handoff_to(&in, &answer, 0, path);
	while (result_len && is_space(*result))
		result++, result_len--;
	while (result_len && is_space(result[result_len - 1]))
		result_len--;
	if (status == 200 && strcmp(command, "ADD")) {
		/* DEL, CHECK, GC and STATUS print nothing on success. */
		if (result_len == 0 || (result_len == 2 && !memcmp(result, "{}", 2)) ||
		    (result_len == 4 && !memcmp(result, "null", 4)))
			return 0;
	} else if (status == 200) {
		if (supported && !version->escaped && result_ok(result, result_len, version)) {
			fwrite(result, 1, result_len, stdout);
			fputc('\n', stdout);
			return 0;
		}
	} else if (status == 422 && error_ok(result, result_len)) {
		fwrite(result, 1, result_len, stdout);
		fputc('\n', stdout);
		return 1;
	}
	handoff_to(&in, &answer, 0, path);
}
