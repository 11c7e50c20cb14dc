"""A real Alexa skill built on the Alexa Skills Kit SDK for Python (ask-sdk-core), served over
plain HTTP on loopback for avs-sim's tests.

Handlers:
  LaunchRequest      -> a welcome that keeps the session open (reprompt).
  LookupIntent       -> a progressive response through the SDK's own DirectiveServiceClient, a
                        one-second "lookup", then the final answer; the session ends.
  ProbeIntent        -> probes the Progressive Response API rules through the SDK: an over-long
                        speech, unwrapped SSML, six valid ones, and one sent a second after
                        the final response; the outcome of each is printed.
  SessionEndedRequest, AMAZON.StopIntent, anything else -> handled so the SDK never fails.

Protocol with the test harness (stdout, one line each, flushed):
  LISTENING <port>                   once the server accepts connections
  PR <label> <status> <code type>    for every progressive response the skill tried: 204, or
                                     the HTTP status of the SDK's ServiceException and the
                                     Python type of the error body's code ("int"; "raw" when
                                     the SDK does not model that status)
  REQUEST <type> new=<true|false>    for every request the skill received
  SESSION launched=<true|false>      in LookupIntent: whether the session attributes say a
                                     LaunchRequest came first in this session

Run: python skill_server.py [--port N]  (REQUESTS_CA_BUNDLE must name avs-sim's CA: the SDK
only calls HTTPS API endpoints and verifies them).
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ask_sdk_core.api_client import DefaultApiClient
from ask_sdk_core.dispatch_components import (
    AbstractExceptionHandler,
    AbstractRequestHandler,
)
from ask_sdk_core.serialize import DefaultSerializer
from ask_sdk_core.skill_builder import CustomSkillBuilder
from ask_sdk_core.utils import is_intent_name, is_request_type
from ask_sdk_model import RequestEnvelope
from ask_sdk_model.services.directive import Error, Header, SendDirectiveRequest, SpeakDirective
from ask_sdk_model.services.service_exception import ServiceException

LOOKUP_DELAY_SECONDS = 1.0


def emit(*words):
    print(" ".join(str(w) for w in words), flush=True)


def send_progressive(handler_input, speech, label):
    """Sends one progressive response with the SDK's DirectiveServiceClient and reports the
    outcome: the HTTP status, and for the errors the SDK models (400/401/403) the type of the
    error body's `code` as the SDK deserialised it."""
    request = handler_input.request_envelope.request
    client = handler_input.service_client_factory.get_directive_service()
    try:
        client.enqueue(
            SendDirectiveRequest(
                header=Header(request_id=request.request_id),
                directive=SpeakDirective(speech=speech),
            )
        )
        status, code = 204, "-"
    except ServiceException as e:
        status = e.status_code
        code = type(e.body.code).__name__ if isinstance(e.body, Error) else "raw"
    emit("PR", label, status, code)
    return status


class LaunchHandler(AbstractRequestHandler):
    def can_handle(self, handler_input):
        return is_request_type("LaunchRequest")(handler_input)

    def handle(self, handler_input):
        handler_input.attributes_manager.session_attributes["launched"] = True
        return (
            handler_input.response_builder.speak("Welcome to the lookup skill. What should I look up?")
            .ask("What should I look up?")
            .response
        )


class LookupHandler(AbstractRequestHandler):
    def can_handle(self, handler_input):
        return is_intent_name("LookupIntent")(handler_input)

    def handle(self, handler_input):
        slots = handler_input.request_envelope.request.intent.slots or {}
        query = slots.get("Query").value if slots.get("Query") else None
        launched = handler_input.attributes_manager.session_attributes.get("launched", False)
        emit("SESSION", "launched={}".format(str(launched).lower()))
        send_progressive(handler_input, "<speak>Hang on while I look that up.</speak>", "lookup")
        time.sleep(LOOKUP_DELAY_SECONDS)
        answer = "Here is what I found about {}.".format(query or "that")
        return handler_input.response_builder.speak(answer).set_should_end_session(True).response


class ProbeHandler(AbstractRequestHandler):
    def can_handle(self, handler_input):
        return is_intent_name("ProbeIntent")(handler_input)

    def handle(self, handler_input):
        send_progressive(handler_input, "x" * 601, "too-long")
        send_progressive(handler_input, "Hang on <break time='1s'/> there.", "unwrapped-ssml")
        for n in range(1, 7):
            send_progressive(handler_input, "Step {}.".format(n), "step-{}".format(n))

        def too_late():
            time.sleep(LOOKUP_DELAY_SECONDS)
            send_progressive(handler_input, "Too late.", "late")

        threading.Thread(target=too_late, daemon=True).start()
        return handler_input.response_builder.speak("Probe done.").set_should_end_session(True).response


class EndHandler(AbstractRequestHandler):
    def can_handle(self, handler_input):
        return is_request_type("SessionEndedRequest")(handler_input) or is_intent_name("AMAZON.StopIntent")(
            handler_input
        )

    def handle(self, handler_input):
        return handler_input.response_builder.response


class FallbackHandler(AbstractRequestHandler):
    def can_handle(self, handler_input):
        return True

    def handle(self, handler_input):
        return handler_input.response_builder.speak("Sorry, I can't help with that.").response


class ErrorHandler(AbstractExceptionHandler):
    def can_handle(self, handler_input, exception):
        return True

    def handle(self, handler_input, exception):
        print("skill error: {!r}".format(exception), file=sys.stderr, flush=True)
        return handler_input.response_builder.speak("Sorry, something went wrong.").response


def build_skill():
    sb = CustomSkillBuilder(api_client=DefaultApiClient())
    for handler in (LaunchHandler(), LookupHandler(), ProbeHandler(), EndHandler(), FallbackHandler()):
        sb.add_request_handler(handler)
    sb.add_exception_handler(ErrorHandler())
    return sb.create()


SKILL = build_skill()
SERIALIZER = DefaultSerializer()


class SkillHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8")
        try:
            envelope = SERIALIZER.deserialize(payload=body, obj_type=RequestEnvelope)
            new = envelope.session.new if envelope.session is not None else None
            emit("REQUEST", envelope.request.object_type, "new={}".format(str(new).lower()))
            response = SKILL.invoke(request_envelope=envelope, context=None)
            payload = json.dumps(SERIALIZER.serialize(response)).encode("utf-8")
            status = 200
        except Exception as e:  # the harness sees a 500 and the reason on stderr
            print("request failed: {!r}".format(e), file=sys.stderr, flush=True)
            payload = json.dumps({"error": str(e)}).encode("utf-8")
            status = 500
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        print("skill http: " + format % args, file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), SkillHttpHandler)
    emit("LISTENING", server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
