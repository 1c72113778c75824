/**
 * roomcast.js: the browser client for roomcast's WebSocket protocol.
 *
 * Plain JavaScript, no dependencies and no build step. Load it with
 * `<script src="/roomcast.js"></script>`. That defines the global
 * `RoomcastClient` (also `module.exports` under CommonJS). The API is the one
 * of ActionHero's websocket client, with Promises added.
 *
 * @example
 *   var client = new RoomcastClient();            // ws(s)://<location.host>/ws
 *   client.on('say', function (m) { console.log(m.from, m.message); });
 *   client.connect(function (error, details) {
 *     if (error) { return console.warn(error); }
 *     client.roomAdd('defaultRoom', function (error) {
 *       if (!error) { client.say('defaultRoom', 'hello'); }
 *     });
 *   });
 *   // or, without callbacks:
 *   await client.connect();
 *   await client.roomAdd('defaultRoom');
 *   const reply = await client.action('status');
 *
 * Constructor
 *   new RoomcastClient(options)
 *     options.url               WebSocket URL. Default `ws(s)://<location.host>/ws`.
 *                               A path ("/ws") or an http(s) URL is also accepted.
 *                               An array of URLs means several servers: see urls.
 *     options.urls              Several servers (an array of URLs as for `url`).
 *                               The client starts with the first and each
 *                               reconnect attempt moves on to the next, so a
 *                               dead node's clients fail over to the others.
 *     options.apiUrl            Base URL for action() over HTTP while not connected.
 *                               Default: the url's origin + "/api".
 *     options.reconnect         Reconnect after an unexpected close. Default true.
 *     options.reconnectDelay    First backoff delay in ms. Default 500.
 *     options.reconnectDelayMax Backoff cap in ms. Default 30000.
 *     options.reconnectFactor   Backoff multiplier. Default 2.
 *     options.reconnectAttempts Attempts before giving up. Default Infinity.
 *     options.requestTimeout    Fail a request with no reply after this many ms
 *                               (0 = never). Default 30000.
 *     options.callbackStyle     "node" (default): callback(error, reply).
 *                               "actionhero": callback(reply), and on failure
 *                               reply.error holds the message, as in
 *                               ActionHero's client. connect() is always
 *                               callback(error, details).
 *     options.WebSocket         WebSocket constructor to use. Default: the global one.
 *
 * Methods. `callback` is optional; without it the method returns a Promise
 * that resolves with the reply or rejects with a RoomcastError.
 *   connect(callback)                  Open the connection. Resolves with the
 *                                      detailsView reply once `connected` fired.
 *                                      While reconnecting it retries at once.
 *   action(name, params, callback)     Run an action. `params` is optional.
 *                                      Fails when the reply has an `error` key.
 *                                      If connect() was never called, or after
 *                                      disconnect(), it goes over HTTP
 *                                      (POST apiUrl/<name>, JSON body).
 *   say(room, message, callback)       Send a chat message to a joined room.
 *   roomAdd(room, callback)            Join a room. The room must exist. See
 *                                      the built-in createChatRoom action.
 *   roomLeave(room, callback)          Leave a room.
 *   roomView(room, callback)           reply.data = {room, membersCount,
 *                                      members: {id: {id, joinedAt}}}.
 *   detailsView(callback)              reply.data = {id, fingerprint, remoteIP,
 *                                      remotePort, params, connectedAt, rooms,
 *                                      totalActions, pendingActions}.
 *   documentation(callback)            The server's action documentation.
 *   file(path, callback)               A file from the server's public directory.
 *   disconnect()                       Close the connection and stop reconnecting.
 *                                      Pending requests fail.
 *   position(room)                     {offset, epoch} of the last chat message
 *                                      seen in a room with history, or null.
 *   on(event, handler) / once(event, handler) / off(event[, handler]) /
 *   emit(event, ...args) / listenerCount(event)
 *     An EventEmitter. `addListener`, `removeListener` and
 *     `removeAllListeners` are aliases. An exception in a handler is reported
 *     to the page and does not break the client.
 *
 * A verb reply is an error when its `status` is not "OK". An action reply is
 * an error when it has an `error` key. A RoomcastError has `message` (the
 * server's text, e.g. "connection already in this room (r)"), `code`
 * ("server", "timeout", "connection-lost", "not-connected", "disconnected",
 * "rejoin", "protocol", "reconnect-failed") and `response` (the full reply,
 * when there is one).
 *
 * Properties (read only)
 *   id, fingerprint     Learnt from detailsView right after each (re)connect.
 *   rooms               Rooms this client is in, in join order. They are
 *                       re-joined after a reconnect; a room with history is
 *                       re-joined from the last offset and epoch seen, so
 *                       the server replays what was missed.
 *   url                 The server in use (or tried last).
 *   state               "disconnected" | "connecting" | "connected" | "reconnecting"
 *   welcomeMessage      The server's welcome text.
 *   details             The last detailsView data.
 *
 * Events
 *   connected     ()                   After every (re)connect, once id,
 *                                      fingerprint and rooms are known.
 *   disconnected  ({code, reason})     The connection that was up went down.
 *   reconnecting  ({attempt, delay, url})
 *                                      A reconnect attempt to `url` is
 *                                      scheduled in `delay` ms.
 *   reconnect     ({attempt, url, rooms, failedRooms})
 *                                      Reconnected, and `rooms` re-joined.
 *                                      Emitted right after `connected`.
 *   recovered     (room, count)        A re-join resumed `room` with no gap:
 *                                      the `count` missed messages follow as
 *                                      `say` events, in order.
 *   unrecovered   (room, count)        A re-join could not resume `room`'s
 *                                      history (count is 0): some messages
 *                                      were missed; reload what you show.
 *   presence      (object)             {context: "presence", event: "join" |
 *                                      "leave", room, id, details, at}, sent
 *                                      by servers with presence events on
 *                                      (no `details` on leave).
 *   message       (object)             Every object the server sends.
 *   welcome       (object)             {welcome, context: "api"}
 *   say           (object)             A chat message {message, room, from,
 *                                      context: "user", sentAt}, plus offset
 *                                      and epoch in rooms with history. A
 *                                      replayed message already seen (same
 *                                      epoch, offset not past the last one)
 *                                      is dropped, before any event.
 *   alert         (object)             A message with context "alert".
 *   api           (object)             Other context "api" messages, e.g.
 *                                      {status: "Bye!"}.
 *   error         (RoomcastError)      Protocol errors, and rooms that could
 *                                      not be re-joined (code "rejoin", with
 *                                      `room` set).
 *
 * Requests made while connecting or reconnecting wait and go out once the
 * connection is up again. Requests in flight when the socket drops fail with
 * code "connection-lost". Liveness uses WebSocket ping/pong, which the
 * browser answers itself.
 */
(function (root, factory) {
  'use strict';
  var RoomcastClient = factory(root);
  if (typeof module === 'object' && module && module.exports) {
    module.exports = RoomcastClient;
  }
  root.RoomcastClient = RoomcastClient;
})(typeof globalThis !== 'undefined' ? globalThis : this, function (root) {
  'use strict';

  var CONNECTING = 0;
  var OPEN = 1;
  var DEFAULTS = {
    url: null,
    apiUrl: null,
    reconnect: true,
    reconnectDelay: 500,
    reconnectDelayMax: 30000,
    reconnectFactor: 2,
    reconnectAttempts: Infinity,
    requestTimeout: 30000,
    callbackStyle: 'node',
    WebSocket: null
  };
  // The server's wording for "you already are where you asked to be".
  var ALREADY_IN_ROOM = 'connection already in this room';
  var NOT_IN_ROOM = 'connection not in this room';
  var ROOM_DELETED = 'this room has been deleted';

  // Run fn later so that a throwing user handler reaches window.onerror
  // instead of breaking the client's own bookkeeping.
  function reportLater(error) {
    setTimeout(function () { throw error; }, 0);
  }

  function errorText(value) {
    if (typeof value === 'string') { return value; }
    if (value && typeof value.message === 'string') { return value.message; }
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  }

  /**
   * Error given to callbacks, Promise rejections and `error` handlers.
   * @param {string} message  the server's error text, or the client's own
   * @param {string} code     see the header
   * @param {Object} [response] the reply that carried the error
   */
  function RoomcastError(message, code, response) {
    var error = new Error(message);
    Object.setPrototypeOf(error, RoomcastError.prototype);
    error.name = 'RoomcastError';
    error.code = code;
    error.response = response || null;
    return error;
  }
  RoomcastError.prototype = Object.create(Error.prototype, {
    constructor: { value: RoomcastError, writable: true, configurable: true }
  });

  // The error a reply carries, or null. Action replies are free-form, so only
  // their `error` key counts; verb replies put failures in `status`.
  function replyError(kind, reply) {
    if (reply.error) {
      return RoomcastError(errorText(reply.error), 'server', reply);
    }
    if (kind === 'verb' && typeof reply.status === 'string' && reply.status !== 'OK') {
      return RoomcastError(reply.status, 'server', reply);
    }
    return null;
  }

  function startsWith(text, prefix) {
    return typeof text === 'string' && text.slice(0, prefix.length) === prefix;
  }

  function resolveUrl(url) {
    var hasLocation = typeof location !== 'undefined' && location && location.host;
    if (!url) {
      if (!hasLocation) {
        throw new Error('RoomcastClient: options.url is required outside a web page');
      }
      return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    }
    if (url.charAt(0) === '/' && url.charAt(1) !== '/' && hasLocation) {
      return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + url;
    }
    return url.replace(/^http(s?):\/\//i, 'ws$1://');
  }

  function apiUrlFor(wsUrl) {
    var parsed = new URL(wsUrl);
    var scheme = parsed.protocol === 'wss:' ? 'https:' : 'http:';
    return scheme + '//' + parsed.host + '/api';
  }

  // ---------------------------------------------------------------- events

  function Emitter() {
    this._listeners = Object.create(null);
  }

  Emitter.prototype.on = function (event, handler) {
    if (typeof handler !== 'function') { throw new TypeError('handler must be a function'); }
    (this._listeners[event] || (this._listeners[event] = [])).push(handler);
    return this;
  };

  Emitter.prototype.once = function (event, handler) {
    var self = this;
    function wrapper() {
      self.off(event, wrapper);
      return handler.apply(this, arguments);
    }
    wrapper.listener = handler;
    return this.on(event, wrapper);
  };

  /** off(event, handler) removes one handler; off(event) all of an event; off() everything. */
  Emitter.prototype.off = function (event, handler) {
    if (event === undefined) {
      this._listeners = Object.create(null);
      return this;
    }
    var list = this._listeners[event];
    if (!list) { return this; }
    if (handler === undefined) {
      delete this._listeners[event];
      return this;
    }
    this._listeners[event] = list.filter(function (h) {
      return h !== handler && h.listener !== handler;
    });
    return this;
  };

  /** Call every handler of `event`; returns whether there was any. */
  Emitter.prototype.emit = function (event) {
    var list = this._listeners[event];
    if (!list || list.length === 0) { return false; }
    var args = Array.prototype.slice.call(arguments, 1);
    var handlers = list.slice();
    for (var i = 0; i < handlers.length; i++) {
      try {
        handlers[i].apply(this, args);
      } catch (error) {
        reportLater(error);
      }
    }
    return true;
  };

  Emitter.prototype.listenerCount = function (event) {
    return (this._listeners[event] || []).length;
  };

  Emitter.prototype.addListener = Emitter.prototype.on;
  Emitter.prototype.removeListener = Emitter.prototype.off;
  Emitter.prototype.removeAllListeners = function (event) { return this.off(event); };

  // ---------------------------------------------------------------- client

  function RoomcastClient(options) {
    if (!(this instanceof RoomcastClient)) { return new RoomcastClient(options); }
    Emitter.call(this);
    this.options = {};
    var key;
    for (key in DEFAULTS) { this.options[key] = DEFAULTS[key]; }
    for (key in options || {}) { this.options[key] = options[key]; }
    var urls = this.options.urls || this.options.url;
    urls = Array.isArray(urls) ? urls : [urls];
    if (urls.length === 0) { urls = [null]; }
    this.options.urls = urls.map(resolveUrl);
    this.options.url = this.options.urls[0];
    this.url = this.options.url;

    this.id = null;
    this.fingerprint = null;
    this.rooms = [];
    this.state = 'disconnected';
    this.welcomeMessage = null;
    this.details = null;
    this.messageId = 0;

    this._socket = null;
    this._pending = new Map();   // messageId (string) -> request in flight
    this._outbox = [];           // requests waiting for the connection
    this._connectWaiters = [];   // connect() calls not settled yet
    this._wantOpen = false;      // connect() called and disconnect() not since
    this._everConnected = false;
    this._attempt = 0;           // reconnect attempts since the last success
    this._urlIndex = 0;          // which of options.urls is in use
    this._positions = Object.create(null);   // room -> {offset, epoch} last seen
    this._timer = null;
    this._byeReceived = false;
    this._onOnline = this._onOnline.bind(this);
  }

  RoomcastClient.prototype = Object.create(Emitter.prototype);
  RoomcastClient.prototype.constructor = RoomcastClient;
  RoomcastClient.RoomcastError = RoomcastError;
  RoomcastClient.defaults = DEFAULTS;

  // ------------------------------------------------------------ connection

  RoomcastClient.prototype.connect = function (callback) {
    var self = this;
    var promise = new Promise(function (resolve, reject) {
      self._connectWaiters.push({ resolve: resolve, reject: reject });
    });
    if (!this._wantOpen) {
      this._wantOpen = true;
      this._byeReceived = false;
      if (typeof root.addEventListener === 'function') {
        root.addEventListener('online', this._onOnline);
      }
    }
    if (this.state === 'connected') {
      this._settleConnectWaiters(null, { context: 'response', status: 'OK', data: this.details });
    } else if (this.state === 'disconnected') {
      this.state = 'connecting';
      this._attempt = 0;
      this._open();
    } else if (this.state === 'reconnecting' && this._timer !== null) {
      this._open();   // the user asked: skip the rest of the backoff delay
    }
    if (typeof callback !== 'function') { return promise; }
    promise.then(function (details) {
      self._invoke(callback, [null, details]);
    }, function (error) {
      self._invoke(callback, [error, null]);
    });
  };

  RoomcastClient.prototype.disconnect = function () {
    var wasConnected = this.state === 'connected';
    this._wantOpen = false;
    this._clearTimer();
    if (typeof root.removeEventListener === 'function') {
      root.removeEventListener('online', this._onOnline);
    }
    var socket = this._socket;
    this._socket = null;
    if (socket) {
      this._detach(socket);
      try { socket.close(1000, 'client disconnect'); } catch (e) { /* already closing */ }
    }
    this.state = 'disconnected';
    this._failAll(function () { return RoomcastError('client disconnected', 'disconnected'); });
    if (wasConnected) {
      this.emit('disconnected', { code: 1000, reason: 'client disconnect' });
    }
  };

  RoomcastClient.prototype._open = function () {
    var self = this;
    this._clearTimer();
    if (this._socket) { return; }
    var Ctor = this.options.WebSocket || root.WebSocket;
    var socket;
    try {
      socket = new Ctor(this.url);
    } catch (error) {
      // A bad URL or a missing WebSocket: retrying cannot help.
      var failure = RoomcastError('cannot open ' + this.url + ': ' + errorText(error), 'protocol');
      var wasConnected = this.state === 'connected';
      this._wantOpen = false;
      this.state = 'disconnected';
      this._failAll(function () { return failure; });
      if (wasConnected) { this.emit('disconnected', { code: 1006, reason: failure.message }); }
      this.emit('error', failure);
      return;
    }
    this._socket = socket;
    socket.onopen = function () {
      if (socket === self._socket) { self._configure(socket); }
    };
    socket.onmessage = function (event) {
      if (socket === self._socket) { self._receive(event.data); }
    };
    function closed(code, reason) {
      if (socket !== self._socket) { return; }
      self._socket = null;
      self._detach(socket);
      self._afterClose({ code: code, reason: reason });
    }
    socket.onerror = function () {
      // Browsers mark the socket CLOSED and follow with a close event, where
      // the drop is handled. Some implementations (Node 20) leave a failed
      // attempt CONNECTING with no close event, so finish those here.
      if (socket.readyState === CONNECTING) {
        closed(1006, 'connection failed');
        try { socket.close(); } catch (e) { /* never opened */ }
      }
    };
    socket.onclose = function (event) {
      closed(event.code, event.reason);
    };
  };

  RoomcastClient.prototype._detach = function (socket) {
    socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
  };

  // The socket is open: re-join the rooms we were in, learn who we are, then
  // announce the connection and release the requests that waited for it.
  RoomcastClient.prototype._configure = function (socket) {
    var self = this;
    var isReconnect = this._everConnected;
    var attempt = this._attempt;
    var wanted = this.rooms.slice();
    var rejoins = wanted.map(function (room) {
      var payload = { event: 'roomAdd', room: room };
      var position = self._positions[room];
      var onReply = null;
      if (position) {
        payload.since = position.offset;
        payload.epoch = position.epoch;
        onReply = function (reply) { self._recoveryReply(room, position.offset, reply); };
      }
      return self._request(payload, 'verb', true, onReply).then(function () {
        return null;
      }, function (error) {
        return startsWith(error.message, ALREADY_IN_ROOM) ? null : { room: room, error: error };
      });
    });
    Promise.all(rejoins).then(function (results) {
      var failures = results.filter(Boolean);
      if (socket !== self._socket) { return; }   // dropped meanwhile; _afterClose took over
      failures.forEach(function (f) { self._forgetRoom(f.room); });
      return self._request({ event: 'detailsView' }, 'verb', true).then(function (reply) {
        self._learnDetails(reply.data);
        return reply;
      }, function (error) {
        if (socket !== self._socket) { throw error; }
        // Still usable without details; say so, and carry on.
        self.emit('error', error);
        var failed = failures.map(function (f) { return f.room; });
        self.rooms = wanted.filter(function (room) { return failed.indexOf(room) < 0; });
        return { context: 'response', status: 'OK', data: self.details };
      }).then(function (reply) {
        self.state = 'connected';
        self._attempt = 0;
        self._everConnected = true;
        self.emit('connected');
        if (isReconnect) {
          self.emit('reconnect', {
            attempt: attempt,
            url: self.url,
            rooms: self.rooms.slice(),
            failedRooms: failures.map(function (f) { return f.room; })
          });
        }
        failures.forEach(function (f) {
          var error = RoomcastError(
            'could not re-join room ' + f.room + ': ' + f.error.message, 'rejoin', f.error.response);
          error.room = f.room;
          self.emit('error', error);
        });
        self._settleConnectWaiters(null, reply);
        self._flushOutbox();
      });
    }).catch(function () {
      // The socket dropped while configuring; _afterClose already reconnects.
    });
  };

  RoomcastClient.prototype._learnDetails = function (data) {
    if (!data || typeof data !== 'object') { return; }
    this.details = data;
    if (data.id !== undefined) { this.id = data.id; }
    if (data.fingerprint !== undefined) { this.fingerprint = data.fingerprint; }
    if (Array.isArray(data.rooms)) { this.rooms = data.rooms.slice(); }
  };

  // The reply to a re-join from a position: runs before the messages replayed
  // behind it are handled, so they find the position where it should be.
  RoomcastClient.prototype._recoveryReply = function (room, since, reply) {
    if (reply.status !== 'OK') { return; }   // refused: the re-join reports it
    var data = reply.data;
    if (data && typeof data === 'object' && data.recovered === true) {
      var count = typeof data.offset === 'number' && data.offset > since ? data.offset - since : 0;
      this.emit('recovered', room, count);
      return;
    }
    if (data && typeof data === 'object' && typeof data.epoch === 'string' && typeof data.offset === 'number') {
      this._positions[room] = { offset: data.offset, epoch: data.epoch };
    } else {
      delete this._positions[room];   // this server keeps no history of the room
    }
    this.emit('unrecovered', room, 0);
  };

  /** {offset, epoch} of the last chat message seen in `room`, or null. */
  RoomcastClient.prototype.position = function (room) {
    var p = this._positions[room];
    return p ? { offset: p.offset, epoch: p.epoch } : null;
  };

  // Record a chat message's position; false for a replayed message already seen.
  RoomcastClient.prototype._observePosition = function (message) {
    var offset = message.offset;
    var epoch = message.epoch;
    if (typeof offset !== 'number' || typeof epoch !== 'string' || typeof message.room !== 'string') {
      return true;
    }
    var last = this._positions[message.room];
    if (last && last.epoch === epoch && offset <= last.offset) { return false; }
    this._positions[message.room] = { offset: offset, epoch: epoch };
    return true;
  };

  RoomcastClient.prototype._afterClose = function (info) {
    var wasConnected = this.state === 'connected';
    this._failPending(function () {
      return RoomcastError('connection lost', 'connection-lost');
    });
    if (!this._wantOpen) { return; }
    if (this._byeReceived || !this.options.reconnect) {
      this._wantOpen = false;
      this.state = 'disconnected';
      var reason = this._byeReceived ? 'server said goodbye' : 'connection closed';
      this._failAll(function () { return RoomcastError(reason, 'disconnected'); });
      if (wasConnected) { this.emit('disconnected', info); }
      return;
    }
    this.state = 'reconnecting';
    if (wasConnected) { this.emit('disconnected', info); }
    this._scheduleReconnect();
  };

  RoomcastClient.prototype._scheduleReconnect = function () {
    var self = this;
    var o = this.options;
    this._attempt += 1;
    if (this._attempt > o.reconnectAttempts) {
      var attempts = this._attempt - 1;
      this._wantOpen = false;
      this.state = 'disconnected';
      this._failAll(function () {
        return RoomcastError('could not reconnect after ' + attempts + ' attempts', 'reconnect-failed');
      });
      this.emit('error', RoomcastError('could not reconnect after ' + attempts + ' attempts', 'reconnect-failed'));
      return;
    }
    // Exponential backoff with a cap and "equal jitter": half fixed, half
    // random, so a restarted server is not hit by every client at once.
    var ceiling = Math.min(o.reconnectDelayMax, o.reconnectDelay * Math.pow(o.reconnectFactor, this._attempt - 1));
    var delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    this._clearTimer();
    // Each attempt tries the next server: a dead node's clients move on.
    this._urlIndex = (this._urlIndex + 1) % o.urls.length;
    this.url = o.urls[this._urlIndex];
    this._timer = setTimeout(function () {
      self._timer = null;
      self._open();
    }, delay);
    this.emit('reconnecting', { attempt: this._attempt, delay: delay, url: this.url });
  };

  RoomcastClient.prototype._onOnline = function () {
    // The network came back: don't sit out the rest of a long backoff.
    if (this.state === 'reconnecting' && this._timer !== null) { this._open(); }
  };

  RoomcastClient.prototype._clearTimer = function () {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  };

  RoomcastClient.prototype._settleConnectWaiters = function (error, details) {
    var waiters = this._connectWaiters;
    this._connectWaiters = [];
    waiters.forEach(function (w) {
      if (error) { w.reject(error); } else { w.resolve(details); }
    });
  };

  RoomcastClient.prototype._failPending = function (makeError) {
    var pending = this._pending;
    this._pending = new Map();
    pending.forEach(function (request) {
      clearTimeout(request.timer);
      request.reject(makeError());
    });
  };

  RoomcastClient.prototype._failAll = function (makeError) {
    this._failPending(makeError);
    var outbox = this._outbox;
    this._outbox = [];
    outbox.forEach(function (request) {
      clearTimeout(request.timer);
      request.reject(makeError());
    });
    this._settleConnectWaiters(makeError());
  };

  // -------------------------------------------------------------- messages

  // Send `payload` with a fresh messageId; the Promise settles with the reply
  // carrying that id. `immediate` skips the outbox (used while configuring).
  RoomcastClient.prototype._request = function (payload, kind, immediate, onReply) {
    var self = this;
    return new Promise(function (resolve, reject) {
      var request = {
        payload: payload, kind: kind, resolve: resolve, reject: reject, timer: null, key: null,
        onReply: onReply || null
      };
      var timeout = self.options.requestTimeout;
      if (timeout > 0) {
        request.timer = setTimeout(function () {
          var queued = self._outbox.indexOf(request);
          if (queued >= 0) { self._outbox.splice(queued, 1); }
          if (request.key !== null) { self._pending.delete(request.key); }
          reject(RoomcastError('no reply within ' + timeout + ' ms (' + payload.event + ')', 'timeout'));
        }, timeout);
      }
      if (immediate || self.state === 'connected') {
        self._transmit(request);
      } else if (self.state === 'connecting' || self.state === 'reconnecting') {
        self._outbox.push(request);
      } else {
        clearTimeout(request.timer);
        reject(RoomcastError('not connected', 'not-connected'));
      }
    });
  };

  RoomcastClient.prototype._transmit = function (request) {
    var socket = this._socket;
    if (!socket || socket.readyState !== OPEN) {
      clearTimeout(request.timer);
      request.reject(RoomcastError('not connected', 'not-connected'));
      return;
    }
    this.messageId += 1;
    var frame = {};
    for (var key in request.payload) { frame[key] = request.payload[key]; }
    frame.messageId = this.messageId;
    var text;
    try {
      text = JSON.stringify(frame);
    } catch (error) {
      clearTimeout(request.timer);
      request.reject(RoomcastError('cannot encode request: ' + errorText(error), 'protocol'));
      return;
    }
    request.key = String(this.messageId);
    this._pending.set(request.key, request);
    try {
      socket.send(text);
    } catch (error) {
      this._pending.delete(request.key);
      clearTimeout(request.timer);
      request.reject(RoomcastError('connection lost', 'connection-lost'));
    }
  };

  RoomcastClient.prototype._flushOutbox = function () {
    var outbox = this._outbox;
    this._outbox = [];
    for (var i = 0; i < outbox.length; i++) { this._transmit(outbox[i]); }
  };

  RoomcastClient.prototype._receive = function (data) {
    if (typeof data !== 'string') {
      this.emit('error', RoomcastError('unexpected binary frame from the server', 'protocol'));
      return;
    }
    var message;
    try {
      message = JSON.parse(data);
    } catch (error) {
      this.emit('error', RoomcastError('invalid JSON from the server: ' + data.slice(0, 200), 'protocol'));
      return;
    }
    if (!message || typeof message !== 'object') {
      this.emit('error', RoomcastError('unexpected message from the server: ' + data.slice(0, 200), 'protocol'));
      return;
    }
    var context = message.context;
    if (context === 'user' && message.offset !== undefined && !this._observePosition(message)) {
      return;   // replayed after a re-join, and already seen
    }
    this.emit('message', message);
    if (context === 'response') {
      this._resolveReply(message);
    } else if (context === 'user') {
      if (message.message === ROOM_DELETED && String(message.from) === '0') {
        this._forgetRoom(message.room);   // the server removes us right after
      }
      this.emit('say', message);
    } else if (context === 'presence') {
      this.emit('presence', message);
    } else if (context === 'alert') {
      this.emit('alert', message);
    } else if (context === 'api') {
      if (message.welcome != null) {
        this.welcomeMessage = message.welcome;
        this.emit('welcome', message);
      } else {
        if (message.status === 'Bye!') { this._byeReceived = true; }
        this.emit('api', message);
      }
    }
  };

  RoomcastClient.prototype._resolveReply = function (reply) {
    if (reply.messageId == null) { return; }
    var key = String(reply.messageId);
    var request = this._pending.get(key);
    if (!request) { return; }   // timed out already, or not ours
    this._pending.delete(key);
    clearTimeout(request.timer);
    if (request.onReply) {
      try { request.onReply(reply); } catch (e) { reportLater(e); }
    }
    var error = replyError(request.kind, reply);
    if (error) { request.reject(error); } else { request.resolve(reply); }
  };

  RoomcastClient.prototype._rememberRoom = function (room) {
    if (this.rooms.indexOf(room) < 0) { this.rooms.push(room); }
  };

  RoomcastClient.prototype._forgetRoom = function (room) {
    var index = this.rooms.indexOf(room);
    if (index >= 0) { this.rooms.splice(index, 1); }
    delete this._positions[room];
  };

  // Hand a request's outcome to a callback in the configured style, or return
  // the Promise when there is no callback.
  RoomcastClient.prototype._finish = function (promise, callback) {
    if (typeof callback !== 'function') { return promise; }
    var self = this;
    var actionheroStyle = this.options.callbackStyle === 'actionhero';
    promise.then(function (reply) {
      self._invoke(callback, actionheroStyle ? [reply] : [null, reply]);
    }, function (error) {
      if (!actionheroStyle) {
        self._invoke(callback, [error, error.response]);
        return;
      }
      var reply = { context: 'response' };
      var source = error.response || {};
      for (var key in source) { reply[key] = source[key]; }
      if (!reply.error) { reply.error = error.message; }
      self._invoke(callback, [reply]);
    });
  };

  RoomcastClient.prototype._invoke = function (callback, args) {
    try {
      callback.apply(this, args);
    } catch (error) {
      reportLater(error);
    }
  };

  // --------------------------------------------------------------- actions

  RoomcastClient.prototype.action = function (name, params, callback) {
    if (typeof params === 'function' && callback === undefined) {
      callback = params;
      params = null;
    }
    var merged = {};
    for (var key in params || {}) { merged[key] = params[key]; }
    merged.action = name;
    var promise = this._wantOpen
      ? this._request({ event: 'action', params: merged }, 'action', false)
      : this._actionOverHttp(name, merged);
    return this._finish(promise, callback);
  };

  RoomcastClient.prototype._actionOverHttp = function (name, params) {
    if (typeof fetch !== 'function') {
      return Promise.reject(RoomcastError('not connected', 'not-connected'));
    }
    var url = (this.options.apiUrl || apiUrlFor(this.url)) + '/' + encodeURIComponent(name);
    var body = {};
    for (var key in params) {
      if (key !== 'action') { body[key] = params[key]; }
    }
    return fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      credentials: 'same-origin'
    }).then(function (response) {
      return response.text().then(function (text) {
        var reply;
        try {
          reply = JSON.parse(text);
        } catch (error) {
          reply = { error: response.statusText || ('HTTP ' + response.status) };
        }
        if (!reply || typeof reply !== 'object') { reply = { data: reply }; }
        if (!reply.error && !response.ok) { reply.error = response.statusText || ('HTTP ' + response.status); }
        var error = replyError('action', reply);
        if (error) { throw error; }
        return reply;
      });
    }, function (error) {
      throw RoomcastError('HTTP request failed: ' + errorText(error), 'not-connected');
    });
  };

  // ----------------------------------------------------------------- verbs

  RoomcastClient.prototype.say = function (room, message, callback) {
    return this._finish(this._request({ event: 'say', room: room, message: message }, 'verb'), callback);
  };

  RoomcastClient.prototype.roomAdd = function (room, callback) {
    var self = this;
    var promise = this._request({ event: 'roomAdd', room: room }, 'verb').then(function (reply) {
      self._rememberRoom(room);
      return reply;
    }, function (error) {
      if (startsWith(error.message, ALREADY_IN_ROOM)) { self._rememberRoom(room); }
      throw error;
    });
    return this._finish(promise, callback);
  };

  RoomcastClient.prototype.roomLeave = function (room, callback) {
    var self = this;
    var promise = this._request({ event: 'roomLeave', room: room }, 'verb').then(function (reply) {
      self._forgetRoom(room);
      return reply;
    }, function (error) {
      if (startsWith(error.message, NOT_IN_ROOM)) { self._forgetRoom(room); }
      throw error;
    });
    return this._finish(promise, callback);
  };

  RoomcastClient.prototype.roomView = function (room, callback) {
    return this._finish(this._request({ event: 'roomView', room: room }, 'verb'), callback);
  };

  RoomcastClient.prototype.detailsView = function (callback) {
    var self = this;
    var promise = this._request({ event: 'detailsView' }, 'verb').then(function (reply) {
      self._learnDetails(reply.data);
      return reply;
    });
    return this._finish(promise, callback);
  };

  RoomcastClient.prototype.documentation = function (callback) {
    return this._finish(this._request({ event: 'documentation' }, 'verb'), callback);
  };

  RoomcastClient.prototype.file = function (path, callback) {
    return this._finish(this._request({ event: 'file', file: path }, 'verb'), callback);
  };

  return RoomcastClient;
});
