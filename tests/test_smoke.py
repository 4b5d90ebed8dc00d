from sqlalchemy import text

from .helpers import make_event, post_event


def test_a_signed_event_is_stored_and_answered_200(client, engine):
    subscription = {"object": "subscription", "id": "sub_1", "customer": "cus_1"}
    event = make_event("customer.subscription.updated", subscription)
    response = post_event(client, event)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["id"] == event["id"]
    with engine.connect() as c:
        row = c.execute(text("SELECT type, customer_id FROM stripe_events")).one()
    assert row.type == "customer.subscription.updated"
    assert row.customer_id == "cus_1"
